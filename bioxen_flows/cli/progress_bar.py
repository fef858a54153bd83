"""The progress bar of a flow run started from the command line (compare, sweep): units
done, elapsed and ETA on a terminal, with the flow's log lines printed above it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bioxen_flows.cli import output


def with_progress(run: Callable[[Callable[[int, int], None]], Any], total: int, *,
                   minutes_each: float | None = None, unit: str = "VMs",
                   name: str = "compare-organisms", cached_first: bool = False) -> Any:
    """A rich bar on a terminal: `unit`s done of `total`, elapsed and ETA. The flow calls
    the listener as whole batches finish; in between, the simulated minutes the cells have
    grown (`minutes_each` per unit, read from the worker processes every half second)
    move it within a VM, so the ETA shows from the first seconds. Log lines print above
    the bar, not onto it. `cached_first`: the flow's first report counts units done
    without growing a cell (a sweep's points from the cache)."""
    err = output.console(stderr=True)
    if not err.is_terminal:
        return run(lambda done, total: None)
    import threading

    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from bioxen_flows.progress import collecting, minutes_done, new_log_lines

    finished, cached = [0.0], [None]
    with collecting() as folder, Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
            TextColumn("{task.completed:.1f}/{task.total:g} " + unit), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=err,
            transient=True) as progress, logs_above(progress):
        bar = progress.add_task(name, total=total)
        lock = threading.Lock()

        offsets: dict[str, int] = {}

        def show() -> None:
            for line in new_log_lines(folder, offsets):  # the worker processes' logs
                progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
            grown = minutes_done(folder) / minutes_each if minutes_each else 0.0
            grown += cached[0] or 0
            with lock:  # never backwards: a finished batch counts whole
                done = max(finished[0], min(grown, total), progress.tasks[0].completed)
                progress.update(bar, completed=done)

        def listener(done: int, all_units: int) -> None:
            if cached_first and cached[0] is None:
                cached[0] = done
            finished[0] = float(done)
            show()

        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(0.5):
                show()

        poller = threading.Thread(target=poll, name="bioxen-progress", daemon=True)
        poller.start()
        try:
            return run(listener)
        finally:
            stop.set()
            poller.join()
            show()  # the last log lines


@contextmanager
def logs_above(progress: Any) -> Iterator[None]:
    """While `progress` shows, log handlers writing to the terminal's stderr write through
    its console, so each line prints above the bar instead of onto it."""
    from bioxen_flows.progress import redirect_console_logs, restore_console_logs

    swapped = redirect_console_logs(_AboveBar(progress))  # type: ignore[arg-type]
    try:
        yield
    finally:
        restore_console_logs(swapped)


class _AboveBar:
    """A file that prints whole lines above a live progress bar."""

    def __init__(self, progress: Any) -> None:
        self.progress, self.pending = progress, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.write("\n")

    def isatty(self) -> bool:
        return True
