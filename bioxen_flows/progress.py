"""Simulated minutes done, from the worker processes that grow cells to the CLI's bar.

A run's cells grow in worker processes the CLI cannot see into, and one VM can take
minutes (a 24 h stochastic replicate), so counting finished VMs leaves a bar still for
that long. Each growing cell writes the simulated minutes it has grown into a small file
of its own in the folder named by `BIOXEN_PROGRESS_DIR` (set by `collecting`, inherited by
the worker processes started after it), at most every `EVERY_S`; the CLI sums the files.
Without the variable (a flow run by a worker, a Dask cluster) nothing is written.

The worker processes' console log lines go there too (`log-<pid>` files, see
`logs_to_folder`), for the CLI to print above its bar: written straight to the terminal
they would land on the bar's line.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

ENV = "BIOXEN_PROGRESS_DIR"
PID_ENV = "BIOXEN_PROGRESS_PID"  # the process showing the bar (its own logs stay put)
EVERY_S = 0.5


class Reporter:
    """One cell's simulated minutes grown (over all its grows), written as it grows."""

    def __init__(self) -> None:
        self.key = uuid.uuid4().hex
        self.grown = 0.0  # minutes of finished grows
        self._last = 0.0

    def update(self, minutes_in_grow: float, *, final: bool = False) -> None:
        """`minutes_in_grow` of the current grow done (`final`: the grow ended)."""
        directory = os.environ.get(ENV)
        if not directory:
            if final:
                self.grown += minutes_in_grow
            return
        now = time.monotonic()
        if final or now - self._last >= EVERY_S:
            self._last = now
            _write(Path(directory) / self.key, self.grown + minutes_in_grow)
        if final:
            self.grown += minutes_in_grow


def _write(path: Path, minutes: float) -> None:
    temporary = path.with_suffix(".tmp")
    try:
        temporary.write_text(f"{minutes!r}")
        temporary.replace(path)  # a reader never sees half a number
    except OSError:  # the CLI has gone and removed the folder: progress is only a display
        pass


def minutes_done(directory: Path) -> float:
    """The simulated minutes the cells reporting into `directory` have grown."""
    total = 0.0
    for path in directory.iterdir():
        if path.suffix or path.name.startswith("log-"):
            continue
        try:
            total += float(path.read_text())
        except (OSError, ValueError):
            continue
    return total


@contextmanager
def _reporting_into(directory: Path) -> Iterator[None]:
    """Cells of this process and its later children report into `directory` (removed at
    the end); the environment is put back as it was."""
    before = {name: os.environ.get(name) for name in (ENV, PID_ENV)}
    os.environ[ENV], os.environ[PID_ENV] = str(directory), str(os.getpid())
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def collecting() -> Iterator[Path]:
    """A fresh folder the cells of this process and its later children report into."""
    directory = Path(tempfile.mkdtemp(prefix="bioxen-progress-"))
    with _reporting_into(directory):
        yield directory


def logs_to_folder() -> None:
    """In a worker process of a run with a bar: its console log lines into the folder
    (`log-<pid>`), for the CLI to print above the bar. Elsewhere, and once done, nothing."""
    directory = os.environ.get(ENV)
    if not directory or os.environ.get(PID_ENV) == str(os.getpid()) or _redirected:
        return
    try:
        stream = open(Path(directory) / f"log-{os.getpid()}", "a", buffering=1,  # noqa: SIM115
                      encoding="utf-8")
    except OSError:
        return
    _redirected.extend(redirect_console_logs(stream))


_redirected: list[Any] = []


def redirect_console_logs(stream: TextIO) -> list[tuple[Any, Any, Any]]:
    """Point every log handler that writes to the process's stderr at `stream` (Prefect's
    console handler prints through a rich console of its own: that one too). Returns what
    `restore_console_logs` puts back."""
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in
                                       list(logging.Logger.manager.loggerDict))]
    swapped = []
    for handler in {h for logger in loggers for h in getattr(logger, "handlers", [])}:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.__stderr__:
            console = getattr(handler, "console", None)
            swapped.append((handler, handler.stream, console))
            handler.setStream(stream)
            if console is not None:
                from rich.console import Console

                handler.console = Console(file=stream, soft_wrap=True, highlight=False,
                                          markup=False)
    return swapped


def restore_console_logs(swapped: list[tuple[Any, Any, Any]]) -> None:
    for handler, stream, console in swapped:
        handler.setStream(stream)
        if console is not None:
            handler.console = console


def new_log_lines(directory: Path, offsets: dict[str, int]) -> list[str]:
    """The whole lines the worker processes logged since the last call (`offsets` is the
    caller's: bytes read per file)."""
    lines = []
    for path in sorted(directory.glob("log-*")):
        try:
            with path.open("rb") as log:
                log.seek(offsets.get(path.name, 0))
                chunk = log.read()
        except OSError:
            continue
        whole = chunk[:chunk.rfind(b"\n") + 1]
        offsets[path.name] = offsets.get(path.name, 0) + len(whole)
        lines += whole.decode("utf-8", "replace").splitlines()
    return lines


def _program_folder(vm_id: str) -> Path:
    from bioxen_flows.settings import get_settings

    name = hashlib.sha256(vm_id.encode()).hexdigest()[:16]  # any id, a safe file name
    return Path(get_settings().home).expanduser() / "running" / name


@contextmanager
def running_program(vm_id: str) -> Iterator[None]:
    """While a program runs on `vm_id` in this process, its cell's simulated minutes are
    readable by `program_minutes` from other processes (`bioxen monitor` shows the clock
    advancing, where the store changes only when the program ends)."""
    directory = _program_folder(vm_id)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "owner.pid").write_text(str(os.getpid()))
    except OSError:  # a read-only home: no live clock, the program still runs
        yield
        return
    with _reporting_into(directory):
        yield


def program_minutes(vm_id: str) -> float | None:
    """Simulated minutes grown so far by a program running on `vm_id` (None: none runs,
    or its process is gone)."""
    directory = _program_folder(vm_id)
    try:
        pid = int((directory / "owner.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return minutes_done(directory)
