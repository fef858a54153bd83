"""Stochastic engines: the compiled exact engine vs libroadrunner's Gillespie, same model.

For each organism, one cell of fixed size (division off, no burn-in: both engines run the
same process from the same state) grows on each engine, interleaved; the figure is
simulated minutes per CPU second (process time), and their ratio (goal: E. coli >= 30x).
Then the compiled engine's cost of a model: first cell on a new machine (kernel compiled),
and in a new process once compiled (kernel loaded).

`--validate` also runs the ensembles of docs/model.md: per organism and engine, N cells
grown T minutes from the same state (means and CVs of ribosomes, transporters,
housekeeping proteins and growth rate at T), and, with division, the lineage's growth
rate (ln 2 / mean interdivision time) against the ODE's, and the stationary means and CVs
with and without division.

Run: python bench/stochastic.py [--validate]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

from bioxen_flows.engine.cell import Cell

MINUTES = {"ecoli": 60.0, "syn3a": 360.0, "minimal_cell": 360.0}
REPS = 3
GOAL = 30.0
QUANTITIES = ("ribosomes_total", "transporters", "housekeeping", "growth_rate_per_min")


def rate(organism: str, engine: str, seed: int) -> float:
    """Simulated minutes per CPU second of one fixed-size cell (kernel already loaded)."""
    cell = Cell(organism, stochastic=True, seed=seed, stochastic_engine=engine,
                division=False, burn_in=False)
    cell.grow(1.0)  # loads the kernel / warms the integrator, off the clock
    start = time.process_time()
    cell.grow(MINUTES[organism])
    return MINUTES[organism] / (time.process_time() - start)


FIRST_CELL = textwrap.dedent("""
    import time
    t = time.perf_counter()
    from bioxen_flows.engine.cell import Cell
    from bioxen_flows.engine import ssa
    cell = Cell("ecoli", stochastic=True, seed=1, burn_in=False)
    cell.install("gfp_reporter", strength=2.5)  # a model this machine has not compiled
    t0 = time.perf_counter()
    cell.grow(0.01)
    print(time.perf_counter() - t0, ssa.compiles())
""")


def kernel_costs() -> tuple[float, float]:
    """Seconds the first grow of a new model takes on a new machine, then in a new process."""
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "BIOXEN_HOME": home}
        out = []
        for _ in range(2):
            line = subprocess.run([sys.executable, "-c", FIRST_CELL], env=env, check=True,
                                  capture_output=True, text=True).stdout.split()
            out.append(float(line[0]))
        return out[0], out[1]


def speed() -> None:
    print("simulated minutes per CPU second (fixed-size cell, same model, same state; best of "
          f"{REPS})")
    for organism in MINUTES:
        compiled, reference = [], []
        for rep in range(REPS):  # interleaved
            compiled.append(rate(organism, "compiled", rep))
            reference.append(rate(organism, "roadrunner", rep))
        c, r = max(compiled), max(reference)
        goal = f"   (goal >= {GOAL:g}x)" if organism == "ecoli" else ""
        print(f"  {organism:<13} compiled {c:8.1f}   roadrunner gillespie {r:7.1f}   "
              f"ratio {c / r:5.1f}x{goal}")
    cold, warm = kernel_costs()
    print(f"first grow of a new model: {cold:.2f} s on a new machine (kernel compiled; goal "
          f"<= 2 s), {warm * 1e3:.0f} ms in a new process once compiled")


def ensemble(organism: str, engine: str, n: int, minutes: float,
             division: bool, burn_in: bool) -> dict[str, np.ndarray]:
    finals: dict[str, list[float]] = {q: [] for q in QUANTITIES}
    for seed in range(n):
        cell = Cell(organism, stochastic=True, seed=10_000 + seed, stochastic_engine=engine,
                    division=division, burn_in=burn_in)
        frame = cell.grow(minutes).to_frame()
        for q in QUANTITIES:
            finals[q].append(float(frame[q].iloc[-1]))
    return {q: np.array(v) for q, v in finals.items()}


def describe(values: np.ndarray) -> str:
    mean = values.mean()
    se = values.std(ddof=1) / math.sqrt(values.size)
    return f"{mean:10.4g} ±{se:8.2g} cv {values.std(ddof=1) / mean:6.3f}"


def validate() -> None:
    print("\nensembles from the same state, fixed size, no burn-in (mean ± se, cv)")
    for organism, n, minutes in (("ecoli", 48, 30), ("syn3a", 48, 120),
                                 ("minimal_cell", 48, 120)):
        runs = {e: ensemble(organism, e, n, minutes, False, False)
                for e in ("compiled", "roadrunner")}
        for q in QUANTITIES:
            a, b = runs["compiled"][q], runs["roadrunner"][q]
            se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
            cv = (a.std(ddof=1) / a.mean()) / (b.std(ddof=1) / b.mean()) - 1
            print(f"  {organism:<13} {q:<21} compiled {describe(a)} | roadrunner {describe(b)}"
                  f" | diff {abs(a.mean() - b.mean()) / se:4.1f} se, cv {100 * cv:+5.1f} %")
    print("\nstationary distribution (compiled, burned in, 4 generations grown), n = 48")
    for organism in MINUTES:
        lam = Cell(organism).metrics()["growth_rate_per_min"]
        minutes = 4 * math.log(2) / lam
        for division in (False, True):
            runs = ensemble(organism, "compiled", 48, minutes, division, True)
            cells = "  ".join(
                f"{q} {runs[q].mean():.4g} cv {runs[q].std(ddof=1) / runs[q].mean():.3f}"
                for q in QUANTITIES)
            print(f"  {organism:<13} division {'on ' if division else 'off'}  {cells}")
    print("\nlineage growth rate (ln2 / mean interdivision time) vs ODE")
    for organism, minutes in (("ecoli", 6000), ("syn3a", 20000), ("minimal_cell", 30000)):
        cell = Cell(organism, stochastic=True, seed=5)
        for _ in range(int(minutes // 1000)):  # grows of at most 1e8 events each
            cell.grow(1000)
        gaps = np.diff(cell.division_times)
        lam_ode = Cell(organism).metrics()["growth_rate_per_min"]
        lam = math.log(2) / gaps.mean()
        print(f"  {organism:<13} {gaps.size} divisions, interdivision {gaps.mean():.1f} ± "
              f"{gaps.std(ddof=1):.1f} min: {lam:.5f}/min vs ODE {lam_ode:.5f} "
              f"({100 * (lam / lam_ode - 1):+.2f} %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validate", action="store_true", help="also run the ensembles")
    args = parser.parse_args()
    speed()
    if args.validate:
        validate()


if __name__ == "__main__":
    main()
