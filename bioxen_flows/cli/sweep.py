"""`bioxen sweep`: which chassis, promoter strength and copy number give the most protein
for the least growth lost (the sweep-design-space Prefect flow)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from bioxen_flows.cli import output
from bioxen_flows.cli.commands import Commands
from bioxen_flows.cli.validate import add_stochastic_arguments

HELP = """\
axes are lists (0.25,1,4) or ranges: LOW:HIGH:logN (N values evenly spaced on a log scale,
e.g. 0.1:10:log8) or LOW:HIGH:linN (1:20:lin5). Each point is a VM grown for --hours; each
organism and nutrient level also gets a control VM without the package, for the burden.
Points computed before (same model, package, parameters, seed, engine) are reused from
Prefect's result cache (setting result_storage, BIOXEN_RESULT_STORAGE; default
$BIOXEN_HOME/prefect-results).

example:
  bioxen sweep ecoli syn3a --package gfp_reporter --strength 0.25,1,4 --copies 1,5,20 \\
      --hours 24 --out results/"""


def register(commands: Commands) -> None:
    from bioxen_flows.organisms.profiles import get_supported_biological_types

    *others, last = get_supported_biological_types()
    sweep = commands.add("sweep", cmd_sweep, "sweep a design space: organisms x promoter "
                         "strength x copies x nutrient (the sweep-design-space Prefect flow)")
    sweep.epilog = HELP
    sweep.formatter_class = argparse.RawDescriptionHelpFormatter
    sweep.add_argument("organisms", nargs="+", metavar="BIO_TYPE",
                       help=f"{', '.join(others)} and/or {last}")
    sweep.add_argument("--package", default="gfp_reporter",
                       help="built-in package or an .ant/.xml module (default gfp_reporter)")
    sweep.add_argument("--strength", default="1", metavar="AXIS",
                       help="promoter strengths, x the package's transcription (default 1)")
    sweep.add_argument("--copies", default="1", metavar="AXIS", help="copy numbers (default 1)")
    sweep.add_argument("--nutrient", metavar="AXIS",
                       help="external nutrient levels, molecules (default: the model's 1e4)")
    sweep.add_argument("--replicates", type=int, default=1,
                       help="stochastic replicates per point (needs --seed)")
    sweep.add_argument("--seed", type=int, help="stochastic mode; replicate r uses seed + r")
    add_stochastic_arguments(sweep)
    sweep.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    sweep.add_argument("--max-burden", type=float, default=20.0, metavar="PERCENT",
                       help="best point = most protein per cell per hour with at most this "
                            "burden (default 20)")
    sweep.add_argument("--refine", action="store_true",
                       help="refine each organism's best point: golden-section search on "
                            "strength between the grid's neighbours (deterministic sweeps)")
    sweep.add_argument("--out", default="bioxen_results", metavar="DIR",
                       help="output folder; each run writes a subdirectory of its own")
    sweep.add_argument("--dask-address", metavar="tcp://HOST:PORT",
                       help="simulate new points on this Dask cluster's workers "
                            "(they share the PostgreSQL state store; see deployments/README.md)")
    sweep.add_argument("--workers", type=int, metavar="N",
                       help="worker processes for new points (default: one per CPU)")


def cmd_sweep(args: argparse.Namespace) -> int:
    """Check the design space, run the flow, print the best points and the reuse."""
    from bioxen_flows.cli.prefect_session import no_telemetry
    from bioxen_flows.cli.validate import check_sweep, stochastic_choice

    no_telemetry()
    check_sweep(args)  # every option, before Prefect starts
    engine, division = stochastic_choice(args)
    from bioxen_flows.orchestration.design_space import design_points, parse_axis

    strengths = parse_axis(args.strength, "strength")
    copies = [int(c) for c in parse_axis(args.copies, "copies", integer=True)]
    nutrients = parse_axis(args.nutrient, "nutrient") if args.nutrient else None
    if args.dask_address:  # the cluster's reach and store, before any flow starts
        from bioxen_flows.orchestration.runners import dask_cluster_threads

        dask_cluster_threads(args.dask_address)
    points = len(design_points(
        args.organisms, args.package, strengths, copies, nutrients or [None], args.replicates,
        args.seed, args.hours))
    from bioxen_flows.cli.prefect_session import interactive_run, on_prefect_api, stopped
    from bioxen_flows.cli.progress_bar import with_progress
    from bioxen_flows.orchestration.execution import watch_progress
    from bioxen_flows.orchestration.stopping import stop_on_signals
    from bioxen_flows.orchestration.sweep import sweep_design_space

    started = time.perf_counter()

    def run(listener: Any) -> Any:
        with watch_progress(listener):
            return sweep_design_space(
                organisms=args.organisms, package=args.package, strengths=strengths,
                copies=copies, nutrients=nutrients, replicates=args.replicates,
                seed=args.seed, hours=args.hours, max_burden=args.max_burden,
                out_dir=args.out, workers=args.workers, stochastic_engine=engine,
                division=division, refine=args.refine, dask_address=args.dask_address,
                return_state=True)

    with stop_on_signals(), on_prefect_api(quiet=args.json), interactive_run():
        state = with_progress(run, points, minutes_each=args.hours * 60, unit="points",
                               name="sweep-design-space", cached_first=True)
    if state.is_cancelled():
        return stopped(state, args.json)
    result = state.result()
    result["wall_seconds"] = time.perf_counter() - started
    if args.json:
        output.print_json(result)
        return 0
    output.console().print(best_table(result["best"], args.max_burden))
    for row in result["best"]:
        if row.get("note"):
            print(f"{row['organism']}: {row['note']}")
    for row in result["best"]:
        if row.get("refined_strength") is not None:
            print(f"{row['organism']}: refined optimum at strength "
                  f"{row['refined_strength']:.4g} (copies {row['copies']}): "
                  f"{row['refined_protein_per_cell_per_hour']:.5g} protein/cell/h at "
                  f"{row['refined_burden_percent']:.3g} % burden (grid: strength "
                  f"{row['strength']:g}, {row['protein_per_cell_per_hour']:.5g})")
    if result.get("equal_designs"):
        print(f"{result['equal_designs']} point(s) equal another's design (strength x copies "
              "enter the model only as their product): computed once, marked same_design_as")
    print(f"{result['reused']} of {result['points']} points reused from the cache "
          f"({result['controls_reused']} of {result['controls']} controls); "
          f"{result['wall_seconds']:.1f} s")
    print(f"results in {result['out_dir']} ({result['latest']} points there)")
    return 0


BEST_COLUMNS = ("organism", "strength", "copies", "protein_per_cell_per_hour", "burden_percent",
                "growth_rate_per_min", "doubling_time_min")


def best_table(best: list[dict[str, Any]], max_burden: float) -> Any:
    """The best point per organism, headers short enough for 80 columns."""
    return output.table(
        f"best point per organism (burden <= {max_burden:g} %)",
        ("organism", "strength", "copies", "protein /cell/h", "burden %", "growth /min",
         "doubling min"),
        [[output.number(row.get(c)) if c != "organism" else row[c] for c in BEST_COLUMNS]
         for row in best])
