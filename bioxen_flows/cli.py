"""The `bioxen` command line (argparse; Prefect is imported only by commands that run flows)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ORGANISMS = ("syn3a", "ecoli", "minimal_cell")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bioxen", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser(
        "compare", help="compare organisms with the compare-organisms Prefect flow"
    )
    compare.add_argument("organisms", nargs="*", help=f"default: {' '.join(ORGANISMS)}")
    compare.add_argument("--replicates", type=int, default=1, help="cells per organism")
    compare.add_argument("--hours", type=float, default=2.0, help="simulated hours (default 2)")
    compare.add_argument("--package", help="package to install in every cell (name or file)")
    compare.add_argument("--atp", type=float, help="ATP allocation, %% of the maximum")
    compare.add_argument("--ribosomes", type=int, help="ribosome allocation per cell")
    compare.add_argument("--seed", type=int, help="stochastic mode with this seed")
    compare.add_argument("--out", type=Path, default=Path("bioxen_results"), help="output folder")
    return parser


def cmd_compare(args: argparse.Namespace) -> int:
    # An offline lab machine should not try to send Prefect telemetry.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    import pandas as pd

    from bioxen_flows.orchestration.flows import check_compare_parameters, compare_organisms

    check_compare_parameters(list(args.organisms or ORGANISMS), args.replicates, args.hours)
    result = compare_organisms(
        organisms=list(args.organisms or ORGANISMS),
        replicates=args.replicates,
        hours=args.hours,
        package=args.package,
        atp_percent=args.atp,
        ribosomes=args.ribosomes,
        seed=args.seed,
        out_dir=str(args.out),
    )
    summary = pd.DataFrame(result["summary"])
    with pd.option_context("display.width", 160, "display.float_format", "{:,.4g}".format):
        print(summary.to_string(index=False))
    print("\n" + "\n".join(f"wrote {path}" for path in result["paths"].values()))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"compare": cmd_compare}[args.command](args)
    except ValueError as exc:
        print(f"bioxen: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
