"""Atomic file writes: write to a temporary file beside the target, then rename.

Temporary names carry the writing process's id and a tag of its machine
(``.<name>.part-<pid>-h<host>-<random>``, and ``.<name>.old-<pid>-h<host>-<random>`` for a folder
being replaced), so the leftovers of a run that was killed are recognised and removed by the next
write to the same folder (:func:`clean_leftovers`), while those of a run still going are left
alone. Whether a process still runs can only be told on its own machine: on a folder shared by
several machines (a network share, a cluster's disk) the others' temporary files are never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path


class TargetExistsError(FileExistsError):
    """A target file or folder exists and overwriting was not allowed; nothing was written.

    The message is neutral ("allow overwriting"): each front end names its own way of
    allowing it (a command-line flag, a checkbox, a question).

    Attributes
    ----------
    paths : list of pathlib.Path
        The targets that exist.
    """

    def __init__(self, message: str, paths: Sequence[os.PathLike | str] = ()) -> None:
        super().__init__(message)
        self.paths = [Path(p) for p in paths]


def _umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no read-only API elsewhere: set and restore at once
    os.umask(mask)
    return mask


# the host tag is optional: names written before it (by this machine, as they were judged then) have none
_LEFTOVER = re.compile(r"^\..*\.(?:part|old)-(\d+)-(?:h([0-9a-f]{6})-)?[^.]+")
_OLD = re.compile(r"^\.(.*)\.old-(\d+)-[^.]+$")
_SHORT = 40


def _host_tag() -> str:
    """Six hex digits of this machine's name: which machine's process a temporary name's id belongs to."""
    return hashlib.sha1(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:6]


HOST = _host_tag()
# another machine's leftovers are judged by age (a container's host name changes with each run): a
# temporary file or folder unchanged this long is no write in progress; a folder moved aside is
# put back within moments by its writer
FOREIGN_STALE_S = 7 * 24 * 3600.0
FOREIGN_OLD_STALE_S = 60.0


def temp_prefix(name: str, what: str = "part") -> str:
    """The start of a temporary name beside ``name``, as :func:`clean_leftovers` recognises it.

    Parameters
    ----------
    name : str
        The file or folder name it stands in for (its first 40 bytes are kept).
    what : {"part", "old"}
        A new file or folder being written, or a previous one moved aside to be replaced.

    Returns
    -------
    str
        ``.<name>.<what>-<pid>-h<host>-``: a random part (and a suffix) completes it.
    """
    return f".{_short(name)}.{what}-{os.getpid()}-h{HOST}-"


def _alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) sends Ctrl+C there (CTRL_C_EVENT is 0)
        try:
            import psutil
        except ImportError:
            return True  # cannot tell: keep the files
        return bool(psutil.pid_exists(pid))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: leave its files alone
    return True


def clean_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and folders that killed writers left in ``folder``.

    Only names of this module's pattern whose writer is gone are touched: on this machine, by
    its process id; another machine's process ids say nothing here (a shared folder, or a
    container whose host name changed), so its leftovers are judged by age
    (:data:`FOREIGN_STALE_S`, :data:`FOREIGN_OLD_STALE_S`). A folder that was moved aside to be
    replaced (``.<name>.old-...``) goes back to ``<name>`` when the writer died before putting
    the new one in place; otherwise leftovers are deleted.

    Returns
    -------
    list of pathlib.Path
        What was removed.
    """
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _LEFTOVER.match(p.name)
        if not m or not _writer_gone(p, m):
            continue
        old = _OLD.match(p.name)
        if old is not None:  # a folder moved aside to be replaced: is the new one in place?
            original = Path(folder) / old.group(1)
            if len(old.group(1).encode("utf-8", "surrogateescape")) >= _SHORT:
                continue  # name cut short: cannot tell what it belonged to, keep it
            if not (original.exists() or original.is_symlink()):
                try:  # killed between the two renames: the previous version goes back
                    os.replace(p, original)
                    removed.append(p)
                except OSError:
                    pass
                continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def _writer_gone(p: Path, m: re.Match) -> bool:
    """Whether the writer of a leftover (``m``: its :data:`_LEFTOVER` match) is gone."""
    if m.group(2) is None or m.group(2) == HOST:  # this machine's (untagged: written before the tag)
        return not _alive(int(m.group(1)))
    try:
        st = p.lstat()
    except OSError:
        return False
    idle = time.time() - max(st.st_mtime, st.st_ctime)  # a rename changes the ctime
    return idle > (FOREIGN_OLD_STALE_S if _OLD.match(p.name) else FOREIGN_STALE_S)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the OS allows opening folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _short(name: str, limit: int = _SHORT) -> str:
    """The start of a file name for temporary names: at most ``limit`` bytes, whole characters."""
    return name.encode("utf-8", "surrogateescape")[:limit].decode("utf-8", "ignore")


def _place_new(tmp: Path, target: Path) -> None:
    """Give ``tmp`` the name ``target`` only if no file has it, in one step (a hard link).

    Two writers racing for one new name: one gets it, the other a :class:`FileExistsError`,
    where a check followed by a rename would let the second replace the first's file.
    """
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise TargetExistsError(f"{target} appeared while writing; not overwritten", [target]) from None
    except OSError:  # no hard links on this file system (FAT, some network shares): check, then rename
        if target.exists():
            raise TargetExistsError(f"{target} appeared while writing; not overwritten", [target]) from None
        os.replace(tmp, target)
        return
    tmp.unlink()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target`` atomically.

    On any error the temporary file is removed and ``target`` is left untouched,
    so a crash, a full disk or a failed write never leaves a half-written file.

    Parameters
    ----------
    target : path-like
        The final file.
    overwrite : bool
        If False and ``target`` exists, raise :class:`TargetExistsError` (a :class:`FileExistsError`)
        before writing.

    Yields
    ------
    pathlib.Path
        The temporary path (same folder and suffix as ``target``).
    """
    target = Path(target)
    if not overwrite and target.exists():
        raise TargetExistsError(f"{target} exists; choose another name or allow overwriting", [target])
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(target.parent)
    # short temporary names: a long (valid) file name plus a prefix would pass the 255-byte limit
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target.stem), suffix=target.suffix[:16], dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes the file private (0600); give it the mode a plain open() would, or keep
    # the mode of the file it replaces, so models and exports stay readable on shared folders
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_umask()
    os.chmod(tmp_path, mode)
    try:
        yield tmp_path
        if tmp_path.exists():
            _fsync_file(tmp_path)  # the data is on disk before the name points at it
        if overwrite:
            os.replace(tmp_path, target)
        else:
            _place_new(tmp_path, target)
        _fsync_dir(target.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces ``target``.

    The previous ``target`` (if any, and if ``overwrite``) is renamed away only once the
    new folder is complete, and deleted after the new one is in place; on any error the
    temporary folder is removed and ``target`` is left as it was.

    Parameters
    ----------
    target : path-like
        The final folder (e.g. ``cells.zarr``).
    overwrite : bool
        Whether an existing ``target`` may be replaced.

    Yields
    ------
    pathlib.Path
        The temporary folder (in the same parent, so the final rename is atomic).

    Raises
    ------
    TargetExistsError
        If ``target`` exists (or appears while writing) and ``overwrite`` is False.
    """
    target = Path(target)
    if not overwrite and target.exists():
        raise TargetExistsError(f"{target} exists; choose another name or allow overwriting", [target])
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target.name), dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private (0700)
    old: Path | None = None
    try:
        yield tmp
        for root, _, names in os.walk(tmp):  # the new files are on disk before any rename
            for n in names:
                _fsync_file(Path(root) / n)
        if target.exists() or target.is_symlink():
            if not overwrite:
                raise TargetExistsError(f"{target} appeared while writing; not overwritten", [target])
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(target.name, "old"), dir=target.parent))
            os.rmdir(old)
            os.replace(target, old)
        try:
            os.replace(tmp, target)
            _fsync_dir(target.parent)
        except BaseException:
            if old is not None:  # put the previous version back
                os.replace(old, target)
                old = None
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
