"""Writing user-named output files without destroying anything the user meant to keep.

A path a user gives for output may name the state store itself (or one of its -wal/-shm/
-journal files, through a symlink or a hard link), or a device, FIFO, socket or folder.
Those are refused before anything is written. Everything else is written to a temporary
file beside it and moved into place in one rename, so a failed write never leaves half a
file where the old one was.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from bioxen_flows.errors import InputError
from bioxen_flows.files import _kind

SQLITE_SIBLINGS = ("", "-wal", "-shm", "-journal")


def store_files(store_path: Path | None = None) -> list[Path]:
    """The files of the default SQLite store, of ``store_path`` (the store in use), and of
    their -wal/-shm/-journal siblings: never an output."""
    from bioxen_flows.settings import get_settings

    bases = [get_settings().state_db, *([store_path] if store_path else [])]
    return [base.with_name(base.name + suffix) for base in bases for suffix in SQLITE_SIBLINGS]


def check_output_path(path: str | Path, *, protected: Iterable[Path], what: str) -> Path:
    """The file to write for ``path`` (symlinks followed): new or a regular file, never one
    of ``protected`` (same path, or same device and inode)."""
    path = Path(path).expanduser()
    try:
        info: os.stat_result | None = os.stat(path)  # follows symlinks
    except FileNotFoundError:
        if path.is_symlink():
            raise InputError(f"{what} {path}: a symbolic link to nothing; give a file name") \
                from None
        info = None
    except OSError as exc:
        raise InputError(f"{what} {path}: {exc.strerror or exc}") from None
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise InputError(f"{what} {path} is {_kind(info.st_mode)}, not a regular file")
    target = path.resolve()
    for guarded in protected:
        same = target == guarded.resolve()
        if not same and info is not None:
            try:
                other = os.stat(guarded)
            except OSError:
                continue
            same = (other.st_dev, other.st_ino) == (info.st_dev, info.st_ino)
        if same:
            raise InputError(f"{what} {path} is the state store; write somewhere else")
    return target


@contextmanager
def atomic_output(target: Path, *, what: str, private: bool = False) -> Iterator[BinaryIO]:
    """A binary file that becomes ``target`` when the block ends without error (else it is
    removed and ``target`` is untouched). ``private``: readable by this user only."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except OSError as exc:
        raise InputError(f"{what} {target}: cannot write in {target.parent}: "
                         f"{exc.strerror or exc}") from None
    try:
        if not private:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"{what} {target}: {exc.strerror or exc}; nothing was written") \
            from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
