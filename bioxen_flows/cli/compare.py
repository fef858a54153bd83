"""`bioxen compare`: organisms side by side, with and without a package (the
compare-organisms Prefect flow), printed as a summary table."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bioxen_flows.cli import completion, output
from bioxen_flows.cli.commands import Commands
from bioxen_flows.cli.validate import add_stochastic_arguments, stochastic_choice
from bioxen_flows.errors import InputError
from bioxen_flows.vm_types import VM_TYPES

SUMMARY_SHOWN = ("organism", "role", "replicates", "burden_percent", "growth_rate_per_min",
                 "growth_rate_per_min_sd", "doubling_time_min", "doubling_time_min_ci95_low",
                 "doubling_time_min_ci95_high", "ribosomes_total", "atp_percent")


def register(commands: Commands) -> None:
    from bioxen_flows.organisms.profiles import get_supported_biological_types

    compare = commands.add("compare", cmd_compare,
                           "compare organisms with the compare-organisms Prefect flow")
    compare.add_argument("organisms", nargs="*",
                         help=f"default: {' '.join(get_supported_biological_types())}"
                         ).completer = completion.organisms  # type: ignore[attr-defined]
    compare.add_argument("--replicates", type=int, default=1, help="cells per organism")
    compare.add_argument("--hours", type=float, default=2.0, help="simulated hours (default 2)")
    compare.add_argument("--package", help="package to install in every cell (name or file)")
    compare.add_argument("--atp", type=float, help="ATP allocation, %% of the maximum")
    compare.add_argument("--ribosomes", type=int, help="ribosome allocation per cell")
    compare.add_argument("--seed", type=int,
                         help="base seed of the stochastic mode (replicate r: seed + r); "
                              "default: drawn and recorded when --replicates > 1")
    compare.add_argument("--deterministic", action="store_true",
                         help="one deterministic (ODE) cell per organism")
    add_stochastic_arguments(compare)
    compare.add_argument("--workers", type=int, metavar="N",
                         help="simulation worker processes (default: the machine's cores)")
    compare.add_argument("--dask-address", metavar="tcp://HOST:PORT",
                         help="run the simulations on this Dask cluster's workers "
                              "(they share the PostgreSQL state store; see deployments/README.md)")
    compare.add_argument("--csv", action="store_true",
                         help="also write the time series as CSV (Parquet is always written)")
    compare.add_argument("--out", type=Path, default=Path("bioxen_results"), help="output folder")
    compare.add_argument("--vm-type", choices=VM_TYPES, default="basic",
                         help="infrastructure of the VMs (xcpng needs --config)")
    compare.add_argument("--config", type=Path, metavar="FILE",
                         help="config file whose xcpng_config/simulation every VM gets")


def cmd_compare(args: argparse.Namespace) -> int:
    """Run the compare-organisms Prefect flow and print its summary table."""
    from bioxen_flows.cli.config import flow_config
    from bioxen_flows.cli.prefect_session import no_telemetry
    from bioxen_flows.cli.validate import check_compare

    no_telemetry()
    organisms = check_compare(args)  # every option, before Prefect starts
    from bioxen_flows.cli.prefect_session import interactive_run, on_prefect_api, stopped
    from bioxen_flows.cli.progress_bar import with_progress
    from bioxen_flows.orchestration.batching import control_count
    from bioxen_flows.orchestration.compare import compare_organisms
    from bioxen_flows.orchestration.execution import watch_progress
    from bioxen_flows.orchestration.runners import dask_cluster_threads, simulation_task_runner
    from bioxen_flows.orchestration.stopping import stop_on_signals

    if args.dask_address:  # the cluster's reach and store, before any flow starts
        from bioxen_flows.vm import infrastructure

        if not infrastructure(args.vm_type).in_process:
            raise InputError("--dask-address runs basic VMs; XCP-ng VMs are driven from here")
        dask_cluster_threads(args.dask_address)
    replicates = 1 if args.deterministic else args.replicates
    stochastic = not args.deterministic and (args.seed is not None or replicates > 1)
    total = len(organisms) * (replicates + (control_count(replicates, stochastic)
                                            if args.package else 0))
    config = flow_config(args.config)  # a bad config file is refused before any server
    engine, division = stochastic_choice(args)
    with stop_on_signals(), on_prefect_api(quiet=args.json):
        flow = compare_organisms.with_options(task_runner=simulation_task_runner(args.workers))

        def run(listener: Callable[[int, int], None]) -> Any:
            with interactive_run(), watch_progress(listener):
                return flow(
                    organisms=organisms,
                    replicates=replicates,
                    hours=args.hours,
                    package=args.package,
                    atp_percent=args.atp,
                    ribosomes=args.ribosomes,
                    seed=args.seed,
                    deterministic=args.deterministic,
                    out_dir=str(args.out),
                    vm_type=args.vm_type,
                    csv=args.csv,
                    config=config,
                    stochastic_engine=engine,
                    division=division,
                    dask_address=args.dask_address,
                    return_state=True,
                )

        state = with_progress(run, total, minutes_each=args.hours * 60)
    if state.is_cancelled():
        return stopped(state, args.json)
    result = state.result()
    if args.json:
        output.print_json(result)
        return 0
    import pandas as pd

    summary = pd.DataFrame(result["summary"])
    shown = [c for c in SUMMARY_SHOWN if c in summary and summary[c].notna().any()]
    with pd.option_context("display.width", 200, "display.float_format", "{:,.4g}".format):
        print(summary[shown].to_string(index=False, na_rep="-"))
    seeds = sorted({s for s in result["seeds"].values() if s is not None})
    from bioxen_flows.orchestration.reporting import burden_lines

    burdens = burden_lines(summary, stochastic=bool(seeds))
    if burdens:
        print("\n" + "\n".join(burdens))
    if seeds:
        print(f"\nstochastic replicates, seeds {seeds[0]}..{seeds[-1]} "
              "(the seed column of timeseries.parquet; --deterministic for one ODE cell)")
    print(f"\nresults in {result['out_dir']} ({result['latest']} points there):")
    print("\n".join(f"  {Path(path).name}" for path in result["paths"].values()))
    return 0
