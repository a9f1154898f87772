"""One place that resolves and checks input/output paths for every command (loops, folders, devices, permissions)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from tadsr_cli.base.errors import InputError, OutputError

NAME_MAX = 255  # bytes per file name on nearly every file system (ext4, xfs, btrfs, APFS, NTFS via UTF-16 units)

_SPECIAL = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def reason(exc: OSError) -> str:
    """A short cause for an OSError, without the errno number or the file name."""
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if exc.errno == errno.ENAMETOOLONG:
        return "file name too long"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ENOENT:
        return "no such file"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device"
    if exc.errno == errno.EFBIG:
        return "file too large for this file system or limit"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    return exc.strerror or str(exc)


def resolve(path: str | Path) -> Path:
    """Absolute path with symlinks resolved; a loop or an unreadable component never raises (kept as written)."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # Python < 3.13 raises RuntimeError for symlink loops
        return Path(os.path.abspath(path))


def is_within(path: str | Path, folder: str | Path) -> bool:
    """True when `path` is `folder` or lies below it (after resolving both)."""
    p, f = resolve(path), resolve(folder)
    return p == f or f in p.parents


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when `a` and `b` name the same file (hard links and symlinks included); False for loops/missing."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        pass
    return resolve(a) == resolve(b)


def _special_kind(mode: int) -> str | None:
    return next((label for test, label in _SPECIAL if test(mode)), None)


def check_input_file(path: str | Path, folder_hint: str = "") -> os.stat_result:
    """Stat `path` as an input file, or raise a one-line `InputError` (missing, loop, folder, device/FIFO, empty,
    unreadable). Never opens a FIFO or device (that could block or consume it)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise InputError(f"{path}: broken symbolic link (its target does not exist)") from None
        raise InputError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        why = reason(exc) if isinstance(exc, OSError) else str(exc)
        raise InputError(f"{path}: cannot read ({why})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path}: is a folder{folder_hint}")
    kind = _special_kind(st.st_mode)
    if kind is not None or not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path}: not a regular file ({kind or 'special file'}); only plain files are read")
    if st.st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    try:
        os.close(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)))
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({reason(exc)})") from None
    return st


def check_input_folder(folder: str | Path) -> Path:
    """`folder` must be a listable folder; raises a one-line `InputError` otherwise."""
    folder = Path(folder)
    try:
        st = os.stat(folder)
    except OSError as exc:
        why = "it does not exist" if isinstance(exc, FileNotFoundError) else reason(exc)
        raise InputError(f"{folder}: not a folder ({why})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{folder}: not a folder (use `tadsr upscale` for single files)")
    try:
        with os.scandir(folder) as it:
            next(it, None)
    except OSError as exc:
        raise InputError(f"{folder}: cannot list the folder ({reason(exc)})") from None
    return folder


def check_output_file(dst: str | Path, src: str | Path | None = None) -> None:
    """Raise a one-line `OutputError` when `dst` cannot become an output file: a folder, device, FIFO or loop in
    the way, a name too long for the file system, or the input itself. A missing `dst` is fine."""
    dst = Path(dst)
    name_len = len(os.fsencode(dst.name))
    if name_len > NAME_MAX:
        raise OutputError(f"{dst}: output file name too long ({name_len} bytes; the limit is {NAME_MAX})")
    try:
        st: os.stat_result | None = os.stat(dst)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise OutputError(f"{dst}: cannot write (a file is in the way of its folder)") from None
    except (OSError, ValueError) as exc:
        why = reason(exc) if isinstance(exc, OSError) else str(exc)
        raise OutputError(f"{dst}: cannot write ({why})") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise OutputError(f"{dst}: a folder is in the way of the output file")
        kind = _special_kind(st.st_mode)
        if kind is not None or not stat.S_ISREG(st.st_mode):
            raise OutputError(f"{dst}: exists and is {kind or 'not a regular file'}; refusing to replace it")
    if src is not None and same_file(src, dst):
        raise OutputError(f"{dst}: refusing to overwrite the input")


def ensure_output_folder(folder: str | Path) -> Path:
    """Create `folder` (and parents) or raise a one-line `OutputError`; it must end up a writable folder."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{folder}: cannot create the output folder (a file is in the way)") from None
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the output folder ({reason(exc)})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{folder}: output folder is not writable")
    return folder
