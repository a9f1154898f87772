"""Recognises an out-of-memory failure, whichever library (torch, CUDA, ONNX Runtime) raised it."""

from __future__ import annotations

import torch

# Lower-case fragments that mark an allocation failure in messages of libraries without an OOM exception type.
_OOM_MARKERS = ("out of memory", "failed to allocate", "cudaerrormemoryallocation")


def is_out_of_memory_message(text: str) -> bool:
    low = text.lower()
    return any(marker in low for marker in _OOM_MARKERS)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for `torch.cuda.OutOfMemoryError` and for a `RuntimeError` whose message reports an allocation failure."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and is_out_of_memory_message(str(exc))
    )
