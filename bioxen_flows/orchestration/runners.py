"""The task runner for CPU-bound simulation tasks.

libroadrunner holds the GIL while it integrates, so simulations only run in parallel in
worker processes; I/O-bound steps (XCP-ng, the store) stay on threads.
"""

from __future__ import annotations

import os

from prefect.task_runners import ProcessPoolTaskRunner


def simulation_task_runner(workers: int | None = None) -> ProcessPoolTaskRunner:
    """A process pool of `workers` processes (default: one per CPU)."""
    return ProcessPoolTaskRunner(max_workers=workers or os.cpu_count() or 1)
