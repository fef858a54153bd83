"""Reading user-named files safely: regular files only, with a size limit, never blocking.

A path a user gives may name a FIFO (reading blocks forever), a device such as /dev/zero
(reading never ends), a directory or something huge. Files are opened without blocking,
checked with fstat on the open descriptor (no race between check and read) and read up
to their limit; anything else is an `InputError` naming the path.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from bioxen_flows.errors import InputError

MiB = 1024 * 1024


def read_text_file(path: str | Path, *, max_bytes: int, what: str = "file") -> str:
    """The UTF-8 text of a regular file of at most `max_bytes` bytes."""
    data = read_bytes_file(path, max_bytes=max_bytes, what=what)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None


def read_bytes_file(path: str | Path, *, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `max_bytes` bytes (a file that grows while
    read still stops at the limit)."""
    fd, path = _open_regular(path, max_bytes, what)
    try:
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise InputError(f"{what} {path} is larger than the limit of {max_bytes:,} bytes")
        return b"".join(chunks)
    except OSError as exc:
        raise InputError(f"{what} {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _open_regular(path: str | Path, max_bytes: int, what: str) -> tuple[int, Path]:
    """A descriptor of a regular file no larger than `max_bytes`, opened without blocking
    (a FIFO or device is refused by fstat, never waited on), and the expanded path."""
    path = Path(path).expanduser()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}: No such file or directory") from None
    except OSError as exc:
        raise InputError(f"{what} {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{what} {path} is {_kind(info.st_mode)}, not a regular file")
        if info.st_size > max_bytes:
            raise InputError(
                f"{what} {path} is {info.st_size:,} bytes; the limit is {max_bytes:,}")
    except OSError as exc:
        os.close(fd)
        raise InputError(f"{what} {path}: {exc.strerror or exc}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd, path


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular_file(path: str | Path, *, max_bytes: int, what: str = "file") -> BinaryIO:
    """A regular file of at most `max_bytes` bytes opened for streaming (binary): the same
    non-blocking open and fstat checks as `read_bytes_file`, for files too big to hold."""
    fd, _ = _open_regular(path, max_bytes, what)
    try:
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
