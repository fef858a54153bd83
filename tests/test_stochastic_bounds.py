"""A stochastic grow runs in bounded time: refused up front when its estimated events
exceed the limit, abandoned (cell unchanged) past the wall-time bound, one line each."""

from __future__ import annotations

import numpy as np
import pytest

from bioxen_flows.engine import cell as cell_module
from bioxen_flows.engine import ssa
from bioxen_flows.engine.cell import Cell
from bioxen_flows.errors import InputError


def test_a_grow_estimated_beyond_the_event_limit_is_refused_before_it_starts() -> None:
    """The issue's case: a plasmid at 1,000 copies and strength 1,000 took 16-17 s per
    simulated minute, so grow(1440) ran past 600 s. Refused at once, nothing changed."""
    cell = Cell("ecoli", stochastic=True, seed=1)
    cell.install("rfp_plasmid", copies=1000, strength=1000)
    before = cell.snapshot()
    with pytest.raises(InputError, match=r"stochastic events .* limit is 1e\+08") as refused:
        cell.grow(1440)
    assert "\n" not in str(refused.value)
    assert cell.snapshot() == before


@pytest.mark.parametrize("engine", ["compiled", "roadrunner"])
def test_a_run_past_the_wall_time_bound_is_abandoned_with_the_cell_unchanged(
    monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    monkeypatch.setattr(cell_module, "CHUNKED_ABOVE_EVENTS", 0.0)  # every run in chunks
    monkeypatch.setattr(ssa, "CHUNK_EVENTS", 1000)  # the compiled engine's pieces too
    monkeypatch.setattr(cell_module, "STOCHASTIC_WALL_S", 0.0)  # and past its bound at once
    cell = Cell("syn3a", stochastic=True, seed=2, stochastic_engine=engine, division=False)
    before = cell.snapshot()
    with pytest.raises(InputError, match="abandoned after 0 s") as abandoned:
        cell.grow(30)
    assert "\n" not in str(abandoned.value)
    assert cell.snapshot() == before
    monkeypatch.setattr(cell_module, "STOCHASTIC_WALL_S", 600.0)
    assert cell.grow(30).column("time_min")[-1] == pytest.approx(30.0)  # and it still works


@pytest.mark.parametrize("engine", ["compiled", "roadrunner"])
def test_a_chunked_run_is_as_reproducible_as_one_run(
    monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    """Chunks are a function of the request: the same seed, state and grow give the same
    trajectory, whichever process runs it; one row per minute, as unchunked."""
    monkeypatch.setattr(cell_module, "CHUNKED_ABOVE_EVENTS", 0.0)
    monkeypatch.setattr(ssa, "CHUNK_EVENTS", 1000)
    runs = [Cell("minimal_cell", stochastic=True, seed=9, stochastic_engine=engine,
                 division=False).grow(45) for _ in range(2)]
    assert np.array_equal(runs[0].values, runs[1].values)
    assert len(runs[0].column("time_min")) == 46
    assert np.allclose(np.diff(runs[0].column("time_min")), 1.0)


def test_a_compiled_run_past_its_event_budget_leaves_the_cell_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The event bound holds while the run goes (propensities can rise as it runs), not
    only in the estimate made before it starts."""
    monkeypatch.setattr(ssa, "CHUNK_EVENTS", 10_000)
    cell = Cell("ecoli", stochastic=True, seed=4)
    before = cell.snapshot()
    monkeypatch.setattr(cell_module, "MAX_STOCHASTIC_EVENTS", 50_000)  # ~2 simulated min
    # the estimate before the start is tested above; here the run itself must stop
    monkeypatch.setattr(Cell, "_refuse_costly", lambda self, minutes: None)
    with pytest.raises(InputError, match="more than 5e\\+04 events") as over:
        cell.grow(10)
    assert "\n" not in str(over.value)
    assert cell.snapshot() == before
