"""Strict integrity checks that lenient decoders skip: PNG chunk CRCs and end marker, JPEG data that ends early.

Pillow decodes a JPEG whose entropy-coded data stops early (a half-downloaded file with an end marker, or one
padded with zeros) without an error, filling the rest with grey; and it never checks the CRCs of PNG image data.
`check_integrity` finds both and raises a one-line `InputError`, so damaged inputs are reported, not upscaled.
"""

from __future__ import annotations

import re
import struct
import threading
import zlib
from pathlib import Path

from tadsr_cli.base.errors import InputError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# FFmpeg mjpeg decoder messages that mean the data stops early or is damaged (others are ignored).
_JPEG_DAMAGE = re.compile(r"overread|error y=|EOI missing|premature|bad vlc|error count|insufficient|truncat",
                          re.IGNORECASE)
_av_lock = threading.Lock()  # the FFmpeg log level is process-wide


def check_integrity(path: Path, fmt: str) -> None:
    """Raise `InputError` when `path` (decoded by Pillow as `fmt`) is structurally damaged or truncated."""
    if fmt == "PNG":
        problem = png_problem(path)
    elif fmt == "JPEG":
        problem = jpeg_problem(path)
    else:
        problem = None
    if problem:
        raise InputError(f"{path}: damaged or truncated image ({problem})")


def png_problem(path: Path) -> str | None:
    """Walk the PNG chunks: every CRC must match and IEND must be present."""
    try:
        with open(path, "rb") as fh:
            if fh.read(8) != _PNG_SIGNATURE:
                return None  # not a plain PNG stream; Pillow decided the format, nothing more to check here
            offset = 8
            while True:
                head = fh.read(8)
                if len(head) < 8:
                    return "the file ends before the IEND chunk"
                length, kind = struct.unpack(">I4s", head)
                crc = zlib.crc32(kind)
                left = length
                while left:
                    block = fh.read(min(left, 1 << 20))
                    if not block:
                        return f"the file ends inside the {_name(kind)} chunk at byte {offset}"
                    crc = zlib.crc32(block, crc)
                    left -= len(block)
                stored = fh.read(4)
                if len(stored) < 4:
                    return f"the file ends inside the {_name(kind)} chunk at byte {offset}"
                if struct.unpack(">I", stored)[0] != crc:
                    return f"CRC error in the {_name(kind)} chunk at byte {offset}"
                if kind == b"IEND":
                    return None
                offset += 12 + length
    except OSError as exc:
        return f"read error: {exc.strerror or exc}"


def _name(kind: bytes) -> str:
    return kind.decode("ascii", "replace")


def jpeg_problem(path: Path) -> str | None:
    """Decode the first picture with FFmpeg's strict-reporting mjpeg decoder and collect damage messages."""
    try:
        import av
        import av.logging
    except ImportError:  # pragma: no cover - video support not installed: Pillow's own checks only
        return None
    found: list[str] = []
    with _av_lock:
        old = av.logging.get_level()
        av.logging.set_level(av.logging.WARNING)
        try:
            with av.logging.Capture(True) as logs:
                try:
                    with av.open(str(path), metadata_errors="ignore") as container:
                        if container.streams.video:
                            next(iter(container.decode(video=0)), None)
                except (av.FFmpegError, OSError, ValueError, UnicodeError):
                    pass  # FFmpeg cannot read this variant; Pillow decoded it, so it is not evidence of damage
        finally:
            av.logging.set_level(old)
    for entry in logs:
        message = str(entry[2]).strip()
        if _JPEG_DAMAGE.search(message):
            found.append(message)
    if not found:
        return None
    return "the JPEG data ends early or is damaged: " + "; ".join(dict.fromkeys(found[:3]))
