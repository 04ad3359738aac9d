"""Atomic file writes: a reader sees the old file or the complete new one, never half a file."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vidseg.errors import VidsegError

# Write failures that more space, a larger quota or a writable file system would fix: reported naming the output
# instead of as a bare OSError.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched. The temporary
    name keeps the file's suffix (or ``suffix``) so that writers that pick a format from it work.
    """
    path = Path(path)
    make_folder(path.parent, output=path)
    suffix = path.suffix if suffix is None else suffix
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    except OSError as error:
        raise output_error(path, error) from error
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with explained_write_errors(path):
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            tmp.chmod(0o666 & ~current_umask())  # mkstemp makes files owner-only; give the usual mode
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def make_folder(folder: str | os.PathLike, output: str | os.PathLike | None = None) -> Path:
    """Create ``folder`` and its missing parents; VidsegError naming ``output`` (what is to be written there,
    by default the folder itself) and the reason if that fails."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise output_error(folder if output is None else output, error, folder=folder) from error
    return folder


@contextlib.contextmanager
def explained_write_errors(output: str | os.PathLike) -> Iterator[None]:
    """Turn a full disk, an exceeded quota or a read-only file system met while writing ``output`` into a
    VidsegError that names ``output``; other errors pass unchanged."""
    try:
        yield
    except OSError as error:
        if error.errno not in WRITE_ERRNOS:
            raise
        raise output_error(output, error) from error


def output_error(output: str | os.PathLike, error: OSError, folder: str | os.PathLike | None = None) -> VidsegError:
    """A VidsegError saying why ``output`` (a file or folder to write into ``folder``, by default its parent)
    could not be written, and what to do."""
    output = Path(output)
    existing = nearest_existing(output.parent if folder is None else folder)
    if not existing.is_dir():
        reason, advice = f"{existing} is a file, not a folder", "choose another output path"
    elif error.errno in (errno.EACCES, errno.EPERM):
        reason, advice = f"no permission to write into {existing}", "choose a folder you can write to"
    elif error.errno in (errno.ENOSPC, errno.EDQUOT):
        reason, advice = "no space left on the device (or the disk quota is exhausted)", (
            "free some space or write somewhere else"
        )
    elif error.errno == errno.EROFS:
        reason, advice = "the file system is read-only", "choose a writable location"
    else:
        reason, advice = error.strerror or str(error), "check the path and try again"
    return VidsegError(f"cannot write {output}: {reason}; {advice}")


def check_writable(output: str | os.PathLike) -> None:
    """Raise the VidsegError that writing ``output`` would raise because of a file standing where a folder must
    be, or a folder without write permission; lets a command fail before its slow work, not after it."""
    output = Path(output)
    existing = nearest_existing(output.parent)
    if not existing.is_dir():
        raise output_error(output, NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise output_error(output, PermissionError(errno.EACCES, os.strerror(errno.EACCES)))


def nearest_existing(path: str | os.PathLike) -> Path:
    """``path`` itself if it exists, else its nearest existing parent."""
    path = Path(path)
    return next((candidate for candidate in (path, *path.parents) if candidate.exists()), Path("."))


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
