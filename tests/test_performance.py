"""PerformanceMonitor: counts, failures, timing aggregates and thread safety."""

from __future__ import annotations

import threading

import pytest

from bioxen_flows.performance import PerformanceMonitor, performance_monitor


def test_track_counts_successes_and_failures() -> None:
    monitor = PerformanceMonitor()
    with monitor.track("run"):
        pass
    with pytest.raises(RuntimeError, match="boom"), monitor.track("run"):
        raise RuntimeError("boom")
    stats = monitor.stats()["run"]
    assert (stats["calls"], stats["successes"], stats["failures"]) == (2, 1, 1)
    assert stats["max_seconds"] >= stats["mean_seconds"] >= 0.0


def test_track_as_decorator_reraises() -> None:
    monitor = PerformanceMonitor()

    @monitor.track("divide")
    def divide(a: float, b: float) -> float:
        return a / b

    assert divide(6, 3) == 2
    with pytest.raises(ZeroDivisionError):
        divide(1, 0)
    stats = monitor.stats()["divide"]
    assert (stats["calls"], stats["successes"], stats["failures"]) == (2, 1, 1)


def test_mean_and_max_from_recorded_values() -> None:
    monitor = PerformanceMonitor()
    for seconds, ok in [(1.0, True), (2.0, False), (6.0, True)]:
        monitor.record("step", seconds, ok)
    monitor.record("other", 0.5, True)
    stats = monitor.stats()
    assert stats["step"]["calls"] == 3
    assert stats["step"]["failures"] == 1
    assert stats["step"]["mean_seconds"] == pytest.approx(3.0)
    assert stats["step"]["max_seconds"] == pytest.approx(6.0)
    assert stats["other"]["calls"] == 1
    monitor.reset()
    assert monitor.stats() == {}


def test_thread_safety() -> None:
    monitor = PerformanceMonitor()

    def work(index: int) -> None:
        for _ in range(100):
            monitor.record("shared", 0.001, index % 2 == 0)
            monitor.record(f"own-{index}", 0.002, True)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = monitor.stats()
    assert stats["shared"]["calls"] == 2000
    assert stats["shared"]["successes"] == stats["shared"]["failures"] == 1000
    assert stats["shared"]["mean_seconds"] == pytest.approx(0.001)
    assert all(stats[f"own-{i}"]["calls"] == 100 for i in range(20))


def test_module_level_monitor_is_shared() -> None:
    from bioxen_flows import performance

    assert performance.performance_monitor is performance_monitor
    assert isinstance(performance_monitor, PerformanceMonitor)
