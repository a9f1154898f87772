"""Atomic writes: a temp file in the target folder, renamed over the target only on success."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tadsr_cli.errors import OutputError


@contextlib.contextmanager
def atomic_write_path(dst: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temp path next to `dst`; on success it replaces `dst`, on any failure it is removed.

    The temp file keeps `dst`'s suffix (or `suffix`) so that writers picking a format by extension still work.
    """
    dst = Path(dst)
    folder = dst.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{dst.stem}.part-", suffix=suffix or dst.suffix, dir=folder)
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
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
