"""Files through Ray's object store: no shared filesystem between the driver and the workers is assumed.

A file is put in parts (`PART_BYTES` each) so the driver never holds a whole long video in memory; a worker writes
the parts into a local file of its own. `ShippedFile` holds the parts' references *inside* a dataclass, so Ray
does not fetch them when the object is passed to a worker: the worker fetches a file once and reuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tadsr_cli.base.atomic import atomic_write_path
from tadsr_cli.base.errors import InputError

PART_BYTES = 64 << 20


@dataclass(frozen=True)
class ShippedFile:
    """A file in the object store: its name (for the suffix and messages), size and parts."""

    key: str  # unique per source file and run (workers cache by it)
    name: str
    size: int
    parts: tuple[Any, ...]  # ObjectRefs of consecutive byte ranges


def put_file(ray: Any, path: Path, key: str) -> ShippedFile:
    """Copy `path` into the object store, part by part."""
    path = Path(path)
    parts = []
    size = 0
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(PART_BYTES):
                parts.append(ray.put(chunk))
                size += len(chunk)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return ShippedFile(key=key, name=path.name, size=size, parts=tuple(parts))


def fetch_file(ray: Any, shipped: ShippedFile, dst: Path) -> Path:
    """Write the shipped file to `dst` (atomically: a worker killed meanwhile leaves no half file)."""
    with atomic_write_path(dst) as tmp, open(tmp, "wb") as fh:
        for ref in shipped.parts:
            fh.write(ray.get(ref))
    return dst
