"""Engine overhead: one E. coli cell for 24 h through `Cell` vs a bare `roadrunner.RoadRunner`.

Both sides run the same Antimony text (`cell.model_text()`), start from balanced growth, and
return the same 1441-point series (selections = `cell._selections`). Engine and baseline
repetitions are interleaved (A B A B ...) and medians are compared. Run: python bench/engine.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import antimony
import roadrunner

from bioxen_flows.engine import cell as cell_module
from bioxen_flows.engine.cell import BALANCED_GROWTH_MIN, Cell
from bioxen_flows.model.builder import MODEL_NAME, antimony_to_sbml

MINUTES, POINTS, GOAL = 1440, 1441, 1.10
SIM_REPS, BUILD_REPS = 51, 7


def records(result) -> list[dict[str, float]]:
    """What a user of bare libroadrunner writes to get one dict per time point."""
    return [dict(zip(result.colnames, row)) for row in result.tolist()]


def bare_build(text: str) -> roadrunner.RoadRunner:
    antimony.clearPreviousLoads()
    antimony.loadAntimonyString(text)
    rr = roadrunner.RoadRunner(antimony.getSBMLString(MODEL_NAME))
    rr.simulate(0, BALANCED_GROWTH_MIN, 2)  # the same balanced-growth warm-up as the engine
    return rr


def engine_cold_caches() -> None:
    antimony_to_sbml.cache_clear()
    cell_module.balanced_growth_state.cache_clear()


def report(label: str, t_engine: list[float], t_bare: list[float]) -> float:
    e, b = statistics.median(t_engine) * 1e3, statistics.median(t_bare) * 1e3
    print(f"  {label:<44} engine {e:8.2f} ms   bare {b:8.2f} ms   ratio {e / b:.3f}")
    return e / b


def timed(fn, prepare=None) -> float:
    if prepare:
        prepare()  # outside the clock
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def compare(label, engine, bare, reps, prepare_engine=None, prepare_bare=None) -> float:
    """Interleaved (A B A B ...) medians of engine() and bare(); prints, returns engine/bare."""
    t_engine, t_bare = [], []
    for _ in range(reps):
        t_engine.append(timed(engine, prepare_engine))
        t_bare.append(timed(bare, prepare_bare))
    return report(label, t_engine, t_bare)


def child(side: str) -> None:
    """One build + simulate in a fresh interpreter: imports done, nothing compiled yet."""
    job = json.load(sys.stdin)
    t0 = time.perf_counter()
    if side == "engine":
        Cell("ecoli").grow(MINUTES).to_records()
    else:
        rr = bare_build(job["text"])
        records(rr.simulate(0, MINUTES, POINTS, selections=job["selections"]))
    print((time.perf_counter() - t0) * 1e3)


def fresh_process(side: str, job: str) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", side], input=job,
                         capture_output=True, text=True, check=True).stdout
    return float(out) / 1e3


def main() -> None:
    cell = Cell("ecoli")
    text, selections = cell.model_text(), list(cell._selections)
    snap = cell.snapshot()
    rr = bare_build(text)
    start = rr.model.getFloatingSpeciesAmounts().copy()

    def eng_reset():
        cell.restore(snap)  # back to t = 0 at balanced growth

    def bare_reset():
        rr.model.setFloatingSpeciesAmounts(start)

    def eng_grow():
        eng_reset()
        return cell.grow(MINUTES)

    def bare_sim():
        bare_reset()
        return rr.simulate(0, MINUTES, POINTS, selections=selections)

    # Same model, same numbers: final growth rate of the 24 h run.
    lam_e = eng_grow().column("growth_rate_per_min")[-1]
    lam_b = bare_sim()[-1, selections.index("lam")]
    rel = abs(lam_e - lam_b) / abs(lam_b)
    assert rel <= 1e-6, (lam_e, lam_b)
    print(f"final growth rate (1/min): engine {lam_e:.10g}  bare {lam_b:.10g}  rel diff {rel:.1e}")
    print(f"libroadrunner {roadrunner.__version__}, {len(selections)} selections, "
          f"{POINTS} points, medians of interleaved repetitions")

    print(f"simulate only ({SIM_REPS} reps, state reset to balanced growth before each):")
    for _ in range(5):  # untimed warm-up of both paths
        eng_grow().to_records(), records(bare_sim())
    def bare_simulate():
        return rr.simulate(0, MINUTES, POINTS, selections=selections)

    headline = compare("grow(1440)+to_records vs simulate+records",
                       lambda: cell.grow(MINUTES).to_records(), lambda: records(bare_simulate()),
                       SIM_REPS, eng_reset, bare_reset)
    compare("grow(1440) vs simulate (no conversion)", lambda: cell.grow(MINUTES),
            bare_simulate, SIM_REPS, eng_reset, bare_reset)

    def bare_full():
        records(bare_build(text).simulate(0, MINUTES, POINTS, selections=selections))

    def engine_full():
        Cell("ecoli").grow(MINUTES).to_records()

    print(f"build + simulate ({BUILD_REPS} reps; libroadrunner's compiled-model cache is warm):")
    compare("warm: engine caches kept", engine_full, bare_full, BUILD_REPS)
    compare("cold: SBML + balanced-state caches cleared", engine_full, bare_full, BUILD_REPS,
            prepare_engine=engine_cold_caches)
    job = json.dumps({"text": text, "selections": selections})
    t_e, t_b = [], []
    for _ in range(BUILD_REPS):
        t_e.append(fresh_process("engine", job))
        t_b.append(fresh_process("bare", job))
    report("fresh interpreter per rep (+ LLVM compile)", t_e, t_b)

    print(f"HEADLINE simulate-only ratio {headline:.3f}; "
          f"goal <= {GOAL:.2f}: {'met' if headline <= GOAL else 'not met'}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
    else:
        main()
