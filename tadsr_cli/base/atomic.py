"""Atomic writes: a temp file in the target folder, renamed over the target only on success."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tadsr_cli.base.errors import OutputError


@contextlib.contextmanager
def atomic_write_path(dst: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temp path next to `dst`; on success it replaces `dst`, on any failure it is removed.

    The temp file keeps `dst`'s suffix (or `suffix`) so that writers picking a format by extension still work.
    """
    dst = Path(dst)
    folder = dst.parent
    ext = suffix or dst.suffix
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{_short(dst.stem)}.part-", suffix=_short(ext, 16), dir=folder)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write here ({exc.strerror or exc})") from exc
    os.close(fd)
    tmp = Path(name)
    # mkstemp creates 0600; give the final file the permissions a plain open() would (umask applies).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        try:
            os.replace(tmp, dst)
        except OSError as exc:
            raise OutputError(f"{dst}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _short(text: str, limit: int = 64) -> str:
    """At most `limit` bytes of `text`: the temp name must fit wherever the final name fits."""
    data = os.fsencode(text)
    if len(data) <= limit:
        return text
    return os.fsdecode(data[:limit])  # a cut multi-byte character stays a (legal) raw byte in the name
