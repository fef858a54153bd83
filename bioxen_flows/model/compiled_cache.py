"""The model loader's disk cache: compiled models kept on disk, so that a process need
not compile a model again (`loader.load_roadrunner` is the way in).

libroadrunner's saved state holds a model's compiled machine code: loading it is far
cheaper than compiling the model text (`bench/engine.py`, "fresh interpreter" lines), and
the loaded model simulates identically. Every CLI call and every worker process of a flow
would otherwise compile each organism's model anew.

A saved state is native code, so the cache is private to its user: one folder per host and
libroadrunner version (machine code is not portable) under ``<home>/model-cache``, mode
0700 and owned by the user, or it is not used. Files are written whole (temp file, then
rename), named by the SHA-256 of the model text, and the oldest are removed beyond
`MAX_FILES`. Processes that need the same missing model compile it once: the first holds
a lock on it while the others wait, then load (a flow's workers would otherwise each
compile every model). The ``model_cache`` setting turns it off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import re
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bioxen_flows.errors import StoreError

log = logging.getLogger(__name__)

MAX_FILES = 256  # ~0.1-0.3 MB each
STALE_TMP_S = 3600  # a save takes milliseconds
LOCK_WAIT_S = 120.0  # a compile takes seconds at most; past this, compile without waiting
MAGIC = b"BXRRST1\n"  # format of a cache file: MAGIC, identity, SHA-256, length, state
HEADER_SIZE = len(MAGIC) + 32 + 32 + 8
MAX_STATE_BYTES = 64 << 20  # states are ~0.1-0.3 MB; anything far larger is not ours


def cache_dir() -> Path | None:
    """This user's folder for this host and libroadrunner, created private; None when the
    cache is off or the folder is not private to this user."""
    import roadrunner

    from bioxen_flows.settings import get_settings

    settings = get_settings()
    if not settings.model_cache:
        return None
    where = f"{socket.gethostname()}-{platform.machine()}-rr{roadrunner.__version__}"
    return private_folder(settings.home / "model-cache" / re.sub(r"[^A-Za-z0-9._-]", "_", where))


def private_folder(folder: Path) -> Path | None:
    """`folder`, created mode 0700, if it is this user's and no one else may write it; else
    None (machine code is loaded from it)."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.stat()
    except OSError:
        return None
    private = info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    return folder if private else None


def _path(folder: Path, text: str) -> Path:
    return folder / f"{hashlib.sha256(text.encode()).hexdigest()}.rrstate"


def load_or_compile(text: str, compile_model: Callable[[], Any]) -> Any:
    """A fresh RoadRunner for `text`: loaded from the cache, else `compile_model()` (kept in
    the cache for later processes, before anything changed it)."""
    folder = cache_dir()
    if folder is None:
        return compile_model()
    path = _path(folder, text)
    rr = _load(path, text)
    if rr is None:
        with compile_lock(path):
            rr = _load(path, text)  # another process may have compiled it meanwhile
            if rr is None:
                rr = compile_model()
                _save(folder, path, rr, text)
    return rr


@contextmanager
def compile_lock(path: Path) -> Iterator[None]:
    """Hold the lock on compiling `path`'s model (released by the OS if the process dies),
    waiting at most `LOCK_WAIT_S` for another process that holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: concurrent processes may compile the same model
        yield
        return
    try:
        fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield
        return
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:  # a holder that hangs must not hang every process that needs the model
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break  # compile it here, as without the lock
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # releases the lock


def load(text: str) -> Any | None:
    """The compiled model of `text` from the cache (a fresh RoadRunner), or None."""
    folder = cache_dir()
    return None if folder is None else _load(_path(folder, text), text)


def _identity(text: str) -> bytes:
    """What a state must have been compiled from: this model text on this libroadrunner."""
    import roadrunner

    return hashlib.sha256(f"{roadrunner.__version__}\0{text}".encode()).digest()


class DamagedState(StoreError):
    """A cache file that is not a whole state of the model asked for: it is removed and the
    model compiled again (never seen outside this module)."""


def _verified_state(path: Path, text: str) -> bytes | None:
    """The state bytes of `path` if its header says they are whole and of `text`'s model;
    None when there is no file; raises `DamagedState` naming what does not match."""
    try:
        with path.open("rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise DamagedState("not a regular file")
            blob = file.read(HEADER_SIZE + MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise DamagedState(f"unreadable ({error.strerror})") from None
    head, state = blob[:HEADER_SIZE], blob[HEADER_SIZE:]
    if len(head) < HEADER_SIZE or not head.startswith(MAGIC):
        raise DamagedState("no header")
    identity = head[len(MAGIC):len(MAGIC) + 32]
    digest = head[len(MAGIC) + 32:len(MAGIC) + 64]
    length = int.from_bytes(head[len(MAGIC) + 64:], "big")
    if identity != _identity(text):
        raise DamagedState("compiled from another model")
    if len(state) != length:
        raise DamagedState(f"{len(state)} bytes where the header says {length}")
    if hashlib.sha256(state).digest() != digest:
        raise DamagedState("content hash does not match")
    return state


def _load(path: Path, text: str) -> Any | None:
    """A RoadRunner from the verified state at `path`, or None (a bad file is removed)."""
    import roadrunner

    try:
        state = _verified_state(path, text)
        if state is None:
            return None
        rr = roadrunner.RoadRunner()
        rr.loadStateS(state)
        return rr
    except (DamagedState, ValueError, RuntimeError) as error:  # RuntimeError: a state this
        # libroadrunner cannot read (another build reporting the same version)
        log.warning("compiled-model cache: dropped %s (%s); compiling the model again",
                    path.name, error)
        _remove(path)
        return None


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _save(folder: Path, path: Path, rr: Any, text: str) -> None:
    """Write `rr`'s state whole behind its verifying header (temp file, then rename)."""
    try:
        state = rr.saveStateS()
    except RuntimeError:
        return
    head = MAGIC + _identity(text) + hashlib.sha256(state).digest() + len(state).to_bytes(8, "big")
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(head + state)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        return
    _prune(folder)


def _prune(folder: Path) -> None:
    """Remove the least recently written states (and compile locks) beyond `MAX_FILES`, and
    half-written states older than `STALE_TMP_S` (a process that ended while saving, e.g. a
    command that finished while its flow was still compiling ahead)."""
    for pattern in ("*.rrstate", "*.lock"):
        try:
            files = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime)
        except OSError:  # another process pruned at the same time
            continue
        for old in files[:-MAX_FILES]:
            old.unlink(missing_ok=True)
    for tmp in folder.glob("*.tmp"):
        try:
            if time.time() - tmp.stat().st_mtime > STALE_TMP_S:
                tmp.unlink(missing_ok=True)
        except OSError:
            continue
