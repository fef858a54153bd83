"""The `bioxen` command line (argparse, imports deferred so `--help` stays fast)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ORGANISMS = ("syn3a", "ecoli", "minimal_cell")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bioxen", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser("compare", help="compare organisms on the embedded engine")
    compare.add_argument("organisms", nargs="*", help=f"default: {' '.join(ORGANISMS)}")
    compare.add_argument("--hours", type=float, default=2.0, help="simulated hours (default 2)")
    compare.add_argument("--package", help="package to install in every cell (name or file)")
    compare.add_argument("--out", type=Path, default=Path("bioxen_results"), help="output folder")
    return parser


def cmd_compare(args: argparse.Namespace) -> int:
    import pandas as pd

    from bioxen_flows.comparison import compare_organisms

    series, summary = compare_organisms(args.organisms or ORGANISMS, args.hours, args.package)
    args.out.mkdir(parents=True, exist_ok=True)
    series.to_csv(args.out / "timeseries.csv", index=False)
    summary.to_csv(args.out / "summary.csv", index=False)
    with pd.option_context("display.width", 160, "display.float_format", "{:,.4g}".format):
        print(summary.to_string(index=False))
    print(f"\nwrote {args.out / 'timeseries.csv'} and {args.out / 'summary.csv'}")
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
