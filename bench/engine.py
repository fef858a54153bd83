"""Engine overhead: one E. coli cell for 24 h through `Cell` vs a bare `roadrunner.RoadRunner`.

Both sides run the same Antimony text (`cell.model_text()`), start from balanced growth, and
return the same 1441-point series (selections = `cell._selections`). Engine and baseline
repetitions are interleaved (A B A B ...) and medians are compared. Run: python bench/engine.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import antimony
import roadrunner

from bioxen_flows.engine.cell import Cell
from bioxen_flows.model import loader
from bioxen_flows.model.builder import MODEL_NAME
from bioxen_flows.model.loader import BALANCED_GROWTH_MIN

MINUTES, POINTS, GOAL = 1440, 1441, 1.10
SIM_REPS, BUILD_REPS, INSTANCES = 200, 9, 4


def records(result) -> list[dict[str, float]]:
    """What a user of bare libroadrunner writes to get one dict per time point."""
    columns = result.colnames
    # Plain zip on purpose: any keyword (even strict=False) leaves CPython's fast call path
    # and costs ~0.2 ms per 1441 rows, which would flatter the engine.
    return [dict(zip(columns, row)) for row in result.tolist()]  # noqa: B905


def bare_build(text: str) -> roadrunner.RoadRunner:
    antimony.clearPreviousLoads()
    antimony.loadAntimonyString(text)
    rr = roadrunner.RoadRunner(antimony.getSBMLString(MODEL_NAME))
    rr.simulate(0, BALANCED_GROWTH_MIN, 2)  # the same balanced-growth warm-up as the engine
    return rr


def engine_cold_caches() -> None:
    loader.forget(instances=False)


def report(label: str, t_engine: list[float], t_bare: list[float]) -> float:
    e, b = statistics.median(t_engine) * 1e3, statistics.median(t_bare) * 1e3
    print(f"  {label:<46} engine {e:7.2f} ms   bare {b:7.2f} ms   ratio {e / b:.3f}")
    return e / b


def compare(label, engine, bare, reps, prep_engine=None, prep_bare=None) -> float:
    """Interleaved (A B A B ...) medians; fn(i) is timed, prep(i) runs before, off the clock."""
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(-2, reps):  # two untimed warm-up rounds
        for fn, prep, out in ((engine, prep_engine, times[0]), (bare, prep_bare, times[1])):
            if prep:
                prep(i)
            t0 = time.perf_counter()
            fn(i)
            if i >= 0:
                out.append(time.perf_counter() - t0)
    return report(label, *times)


def child(side: str) -> None:
    """One build + simulate in a fresh interpreter: imports done (the engine's settings
    module too, which it reads for its compiled-model cache), nothing compiled yet."""
    import bioxen_flows.settings  # noqa: F401

    job = json.load(sys.stdin)
    t0 = time.perf_counter()
    if side == "engine":
        Cell("ecoli").grow(MINUTES).to_records()
    else:
        rr = bare_build(job["text"])
        records(rr.simulate(0, MINUTES, POINTS, selections=job["selections"]))
    print((time.perf_counter() - t0) * 1e3)


def fresh_process(side: str, job: str, model_cache: bool = False) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--child", side],
        input=job,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BIOXEN_MODEL_CACHE": "true" if model_cache else "false"},
    ).stdout
    return float(out) / 1e3


STOCHASTIC_MINUTES = 30.0


def stochastic_speed() -> None:
    """Gillespie mode: simulated minutes per CPU second, per organism (one cell from balanced
    growth, seed 1, one sample per minute). It falls with the molecules per cell: every
    reaction event is simulated, and E. coli has ~6x Syn3A's ribosomes."""
    print(f"stochastic (Gillespie), {STOCHASTIC_MINUTES:g} simulated min per organism:")
    for organism in ("syn3a", "ecoli", "minimal_cell"):
        cell = Cell(organism, stochastic=True, seed=1)
        t0 = time.process_time()
        cell.grow(STOCHASTIC_MINUTES)
        cpu = time.process_time() - t0
        print(f"  {organism:<13} {STOCHASTIC_MINUTES / cpu:8.1f} simulated min per CPU s")


def main() -> None:
    os.environ["BIOXEN_HOME"] = tempfile.mkdtemp(prefix="bioxen-bench-engine-")
    os.environ["BIOXEN_MODEL_CACHE"] = "false"  # the engine's own compile, as a bare user's
    # Several instances per side, used in turn: one RoadRunner instance can run a few % faster
    # or slower than another built identically (memory placement), which must not bias the ratio.
    cells = [Cell("ecoli") for _ in range(INSTANCES)]
    snaps = [c.snapshot() for c in cells]
    text, selections = cells[0].model_text(), list(cells[0]._selections)
    rrs = [bare_build(text) for _ in range(INSTANCES)]
    start = rrs[0].model.getFloatingSpeciesAmounts().copy()  # balanced growth, computed bare

    def eng_reset(i):  # back to t = 0 at balanced growth
        cells[i % INSTANCES].restore(snaps[i % INSTANCES])

    def bare_reset(i):
        rrs[i % INSTANCES].model.setFloatingSpeciesAmounts(start)

    def grow(i):
        return cells[i % INSTANCES].grow(MINUTES)

    def simulate(i):
        return rrs[i % INSTANCES].simulate(0, MINUTES, POINTS, selections=selections)

    # Same model, same numbers: final growth rate of the 24 h run.
    eng_reset(0), bare_reset(0)
    lam_e = grow(0).column("growth_rate_per_min")[-1]
    lam_b = simulate(0)[-1, selections.index("lam")]
    rel = abs(lam_e - lam_b) / abs(lam_b)
    assert rel <= 1e-6, (lam_e, lam_b)
    print(f"final growth rate (1/min): engine {lam_e:.10g}  bare {lam_b:.10g}  rel diff {rel:.1e}")
    print(
        f"libroadrunner {roadrunner.__version__}; {len(selections)} selections x {POINTS} points;"
        " medians of interleaved repetitions"
    )

    print(f"simulate only ({SIM_REPS} reps, each from balanced growth at t = 0):")
    headline = compare(
        "grow(1440)+to_records vs simulate+records",
        lambda i: grow(i).to_records(),
        lambda i: records(simulate(i)),
        SIM_REPS,
        eng_reset,
        bare_reset,
    )
    compare(
        "grow(1440) vs simulate (no conversion)", grow, simulate, SIM_REPS, eng_reset, bare_reset
    )

    def engine_full(_):
        Cell("ecoli").grow(MINUTES).to_records()

    def bare_full(_):
        records(bare_build(text).simulate(0, MINUTES, POINTS, selections=selections))

    print(f"build + simulate + records ({BUILD_REPS} reps):")
    compare("warm: engine caches kept", engine_full, bare_full, BUILD_REPS)
    compare(
        "cold: SBML + balanced-state caches cleared",
        engine_full,
        bare_full,
        BUILD_REPS,
        prep_engine=lambda _: engine_cold_caches(),
    )
    job = json.dumps({"text": text, "selections": selections})
    t_e, t_b = [], []
    for _ in range(BUILD_REPS):
        t_e.append(fresh_process("engine", job))
        t_b.append(fresh_process("bare", job))
    report("fresh interpreter per rep (incl. LLVM compile)", t_e, t_b)
    fresh_process("engine", job, model_cache=True)  # compiles once, into the cache
    t_e, t_b = [], []
    for _ in range(BUILD_REPS):
        t_e.append(fresh_process("engine", job, model_cache=True))
        t_b.append(fresh_process("bare", job))
    report("fresh interpreter, engine's compiled-model cache", t_e, t_b)

    stochastic_speed()
    print(
        f"HEADLINE simulate-only ratio {headline:.3f}; "
        f"goal <= {GOAL:.2f}: {'met' if headline <= GOAL else 'not met'}"
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
    else:
        main()
