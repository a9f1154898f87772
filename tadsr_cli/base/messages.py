"""Makes message text safe for one terminal line: escapes control characters and undecodable file-name bytes."""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def strip_ansi(text: str) -> str:
    """Remove ANSI escape sequences (colour/bold codes some libraries put into exception messages)."""
    return _ANSI.sub("", text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a file-name byte that is not UTF-8 (surrogateescape): show the byte
        return f"\\x{code - 0xDC00:02x}"
    if code > 0xFF:
        return f"\\u{code:04x}"
    return {0x09: " ", 0x0A: " ", 0x0D: " "}.get(code, f"\\x{code:02x}")


def terminal_safe(text: str) -> str:
    """One printable line: newlines/tabs become spaces; ESC, other control characters and non-UTF-8 bytes of
    file names are shown as `\\xNN`, so a hostile file name cannot move the cursor or recolour the terminal."""
    return _UNSAFE.sub(_escape, str(text))
