"""Safe writes: atomic files (a reader sees the old file or the complete new one, never half a file), outputs
checked against the inputs of the same command, temporary names that carry their owner's pid, and a lock that
gives a folder one writer."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
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
        fd, tmp_name = tempfile.mkstemp(prefix=temporary_prefix(path.stem), suffix=f".tmp{suffix}", dir=path.parent)
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


# ------------------------------------------------------------------------------- temporary files and their owners

# Temporary entries are named ``.<name>.pid<PID>.<anything>``: the pid says which process may still need them.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.pid(?P<pid>\d+)\.")


def temporary_prefix(name: str) -> str:
    """The start of the name of a temporary file or folder for ``name``, owned by this process."""
    return f".{name}.pid{os.getpid()}."


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def remove_dead_temporaries(folder: str | os.PathLike, names: Iterable[str] | None = None) -> list[Path]:
    """Remove the temporary files and folders in ``folder`` whose owner process is dead (left by a killed run);
    with ``names``, only those of these output names. Return what was removed. Temporaries of live processes,
    this one included, are left alone: each process removes only its own."""
    folder = Path(folder)
    wanted = None if names is None else set(names)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None or (wanted is not None and match["name"] not in wanted):
            continue
        if process_alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def remove_dead_temporaries_of(output: str | os.PathLike) -> list[Path]:
    """``remove_dead_temporaries`` for the temporaries of one output file or folder (in its parent folder)."""
    output = Path(output)
    return remove_dead_temporaries(output.parent, {output.name, output.stem})


# -------------------------------------------------------------------------------------- outputs are not inputs


def check_outputs_spare_inputs(
    outputs: Iterable[tuple[str, str | os.PathLike | None]], inputs: Iterable[tuple[str, str | os.PathLike | None]]
) -> None:
    """VidsegError unless every output (``(what, path)``, e.g. ``("--out", "a.json")``) leaves every input of the
    same command alone, whatever ``--overwrite`` says.

    An output may not be an input, contain one (a folder replaced with its contents), be a file or folder that
    exists inside an input folder (a dataset root's files are all inputs), or be a hard link to an input file.
    Paths are compared after resolving symbolic links and ``..``, and files also by device and inode.
    """
    named = [(what, Path(path), Path(os.path.realpath(path))) for what, path in inputs if path is not None]
    for out_what, out_path in outputs:
        if out_path is None:
            continue
        out = Path(os.path.realpath(out_path))
        exists = os.path.lexists(out_path)
        for in_what, in_path, resolved in named:
            if out == resolved:
                problem = "is"
            elif out in resolved.parents:
                problem = "contains"
            elif exists and resolved in out.parents and resolved.is_dir():
                problem = "is inside"
            elif exists and resolved.exists() and _same_file(out, resolved):
                problem = "is a hard link to"
            else:
                continue
            raise VidsegError(
                f"{out_what} {out_path} {problem} {in_what} {in_path}, an input of this command; writing it would "
                "destroy the input (even --overwrite never replaces an input): choose another output path"
            )
        if exists and out.is_file() and out.stat().st_nlink > 1:
            for in_what, in_path, resolved in named:
                if resolved.is_dir() and _holds_inode(resolved, out.stat()):
                    raise VidsegError(
                        f"{out_what} {out_path} is a hard link to a file in {in_what} {in_path}, an input of this "
                        "command; writing it would destroy the input: choose another output path"
                    )


def _same_file(a: Path, b: Path) -> bool:
    try:
        first, second = a.stat(), b.stat()
    except OSError:
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def _holds_inode(folder: Path, target: os.stat_result) -> bool:
    for parent, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                found = os.stat(os.path.join(parent, name))
                if (found.st_dev, found.st_ino) == (target.st_dev, target.st_ino):
                    return True
    return False


# -------------------------------------------------------------------------------------------------- one writer


@contextlib.contextmanager
def exclusive_lock(folder: str | os.PathLike, what: str, name: str = ".vidseg.lock") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` for the block: ``fcntl.flock`` on ``folder/name``, a file that
    records this process's pid and is removed at the end (as is ``folder`` if the block created it and left it
    empty). VidsegError naming the process that holds the lock already. The kernel releases the lock when the
    process ends, however it ends, so a killed process never leaves ``folder`` locked."""
    folder = Path(folder)
    created = not folder.exists()
    make_folder(folder)
    path = folder / name
    while True:
        try:
            handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115  # held open for the whole block
        except OSError as error:
            raise output_error(path, error) from error
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise VidsegError(
                f"{folder} is in use: process {holder} is {what} it (lock {path}); wait for it to finish or stop "
                "it, or choose another folder"
            ) from None
        # The holder before us removes the file before it unlocks: lock the file that is at ``path`` now.
        if _same_open_file(path, handle.fileno()):
            break
        handle.close()
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield path
    finally:
        path.unlink(missing_ok=True)
        handle.close()  # closing releases the lock
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty


def _same_open_file(path: Path, fd: int) -> bool:
    try:
        first, second = path.stat(), os.fstat(fd)
    except OSError:
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)
