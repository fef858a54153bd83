"""Stopping a run: one Ctrl-C (or SIGTERM) cancels it cleanly, a second ends the process.

A terminal sends Ctrl-C's SIGINT to every process of the command's process group; left to
Python's default, each worker and the temporary Prefect server raise KeyboardInterrupt
wherever they are (screens of tracebacks, a dead server the flow then waits on). So the
command alone handles the signal: `stop_on_signals` turns the first into a request the
flow sees between batches (`stop_requested`), and the helper processes ignore SIGINT
(`ignore_interrupts`) and end with their parent instead (`exit_with_parent`,
`helper_process_options`), so that a flow killed with SIGKILL takes them down too. A
second signal ends the command at once, leaving only what `bioxen gc` reaps.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bioxen_flows.errors import BioXenError

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C
PARENT_POLL_S = 0.25  # how soon a helper process notices that its parent is gone
STOP_POLL_S = 0.2  # how soon a waiting flow notices a stop request
PR_SET_PDEATHSIG = 1  # linux/prctl.h

_stop = threading.Event()


class RunStopped(BioXenError):
    """The user stopped the run (Ctrl-C, SIGTERM): what finished is kept, the rest dropped."""


def request_stop() -> None:
    """Ask the runs of this process to stop at their next check (what the first Ctrl-C does)."""
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def raise_if_stopped(what: str = "the run") -> None:
    if _stop.is_set():
        raise RunStopped(f"{what} was stopped")


def clear_stop() -> None:
    """Forget an earlier stop request (a new command in the same process, or a test)."""
    _stop.clear()


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within this block, the first SIGINT/SIGTERM/SIGHUP requests a stop (the run then ends
    within seconds and says what it kept), a second ends the process at once with exit code
    130. Outside the main thread, where signals cannot be set, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    clear_stop()

    def handle(signum: int, frame: Any) -> None:
        if _stop.is_set():
            # straight to the descriptor: a progress bar may hold the stream's lock
            os.write(2, b"\nbioxen: stopped at once; `bioxen gc` destroys what is left\n")
            os._exit(EXIT_INTERRUPTED)  # helpers watch this process and end with it
        _stop.set()

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, handle) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def ignore_interrupts() -> None:
    """Leave Ctrl-C to the command that started this process (see the module docstring);
    one that came while it started (held by `interrupts_held`) is dropped."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C (blocked, not lost) in this thread for the block: the threads it starts
    keep it blocked, and so do the worker processes they spawn, until their initializer
    ignores it. A worker interrupted while Python was still starting it printed a
    traceback over the command's one line. A Ctrl-C that came meanwhile is delivered here
    when the block ends."""
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: nothing to hold
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def exit_with_parent(poll_s: float = PARENT_POLL_S) -> None:
    """End this process (at once, as if killed) when the process that started it is gone:
    a worker must never go on creating VMs for a run whose flow was killed.

    On Linux the kernel does it (a parent-death signal, SIGKILL: a worker deep in a
    libroadrunner call holds the GIL for minutes, so no Python code of its own could).
    That signal follows the parent *thread* that started the worker: Prefect's process
    pool starts them from its resolver threads, which live as long as the pool. Elsewhere
    a thread polls the parent's pid (re-parenting changes it)."""
    parent = os.getppid()
    if _set_parent_death_signal(signal.SIGKILL):
        if os.getppid() != parent:  # the parent died before the signal was set
            os._exit(EXIT_INTERRUPTED)
        return

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(EXIT_INTERRUPTED)

    threading.Thread(target=watch, name="bioxen-parent-watch", daemon=True).start()


def _set_parent_death_signal(signum: int) -> bool:
    """prctl(PR_SET_PDEATHSIG, signum) on Linux; False where there is no such thing."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum) == 0


def terminate_pool_workers(runner: Any, grace_s: float = 2.0) -> int:
    """Stop the worker processes of a (started) process-pool task runner at once: SIGTERM,
    then SIGKILL after `grace_s`. Their running batches are lost, which is the point: a
    pool's own shutdown waits for them (minutes for a long stochastic batch). Returns how
    many were stopped. Any other runner (threads, Dask, None) is left alone."""
    executor = getattr(runner, "_executor", None)  # Prefect's ProcessPoolTaskRunner
    processes = list((getattr(executor, "_processes", None) or {}).values())
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + grace_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(1.0)
    return len(processes)


def helper_process_options() -> dict[str, Any]:
    """`subprocess.Popen` options for a helper (the temporary Prefect server): its own
    session, so a terminal's Ctrl-C does not reach it, and, on Linux, SIGTERM when this
    process dies (kill -9 included), so it never outlives the command."""
    options: dict[str, Any] = {"start_new_session": True}
    if sys.platform.startswith("linux"):
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded here: no import after fork
        parent = os.getpid()

        def die_with_parent() -> None:  # runs in the child between fork and exec
            prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)

        options["preexec_fn"] = die_with_parent
    return options
