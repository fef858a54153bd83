"""Process-wide timing of operations, so slow or failing steps show up without a profiler."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class _OperationStats:
    calls: int = 0
    successes: int = 0
    failures: int = 0
    total_seconds: float = 0.0
    max_seconds: float = 0.0


class PerformanceMonitor:
    """Thread-safe per-operation call counts and durations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[str, _OperationStats] = {}

    def record(self, operation: str, seconds: float, ok: bool) -> None:
        with self._lock:
            entry = self._stats.setdefault(operation, _OperationStats())
            entry.calls += 1
            if ok:
                entry.successes += 1
            else:
                entry.failures += 1
            entry.total_seconds += seconds
            entry.max_seconds = max(entry.max_seconds, seconds)

    @contextmanager
    def track(self, operation: str) -> Iterator[None]:
        """Time a block (``with``) or a function (decorator); exceptions count and propagate."""
        start = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.record(operation, time.perf_counter() - start, ok)

    def stats(self) -> dict[str, dict]:
        with self._lock:
            return {
                name: {
                    "calls": s.calls,
                    "successes": s.successes,
                    "failures": s.failures,
                    "total_seconds": s.total_seconds,
                    "mean_seconds": s.total_seconds / s.calls if s.calls else 0.0,
                    "max_seconds": s.max_seconds,
                }
                for name, s in self._stats.items()
            }

    def reset(self) -> None:
        with self._lock:
            self._stats.clear()


performance_monitor = PerformanceMonitor()
