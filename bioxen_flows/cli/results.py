"""`bioxen results query SQL`: DuckDB over every comparison's and sweep's Parquet files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bioxen_flows.cli import output
from bioxen_flows.cli.commands import Commands
from bioxen_flows.results import TIMEOUT_S

HELP = """\
views: comparisons (one row per organism and run), comparison_timeseries (VM x minute),
sweeps (design point x replicate); each with run_dir, run_date, run_id and started_at.
latest_comparisons, latest_comparison_timeseries, latest_sweeps: the newest run only
(every run counts in the others: a sweep run twice is there twice). runs: one row per run
folder (started_at, complete). One SELECT only; it reads nothing outside DIR and is
stopped past --timeout or 1 GiB of memory.

example:
  bioxen results query "SELECT run_date, organism, avg(growth_rate_per_min) AS growth
                        FROM comparisons GROUP BY ALL ORDER BY run_date"
  bioxen results query "SELECT organism, strength, burden_percent FROM latest_sweeps" """


def register(commands: Commands) -> None:
    query = commands.group("results", "query results across runs (DuckDB SQL)",
                           ("query",)).add(
        "query", cmd_results_query, "run SQL over every run's Parquet results", json=False,
        epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    query.add_argument("sql", metavar="SQL", help="one DuckDB SELECT over the views below")
    query.add_argument("--results", type=Path, default=Path("bioxen_results"), metavar="DIR",
                       help="the folder compare/sweep wrote to (default bioxen_results)")
    query.add_argument("--timeout", type=float, default=TIMEOUT_S, metavar="SECONDS",
                       help=f"stop the query after this long (default {TIMEOUT_S:g})")
    form = query.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="rows as a JSON list")
    form.add_argument("--csv", action="store_true", help="rows as CSV")


def cmd_results_query(args: argparse.Namespace) -> int:
    from bioxen_flows.results import query
    from bioxen_flows.serialization import json_safe

    frame = query(args.results, args.sql, timeout=args.timeout)
    if args.json:
        records = frame.astype(object).where(frame.notna(), None).to_dict("records")
        output.print_json(json_safe([{k: _plain(v) for k, v in r.items()} for r in records]))
    elif args.csv:
        frame.to_csv(sys.stdout, index=False)
    else:
        output.console().print(output.table(
            f"{len(frame)} row(s)", [str(c) for c in frame.columns],
            [[output.number(_plain(v)) for v in row] for row in
             frame.astype(object).where(frame.notna(), None).itertuples(index=False)],
        ))
    return 0


def _plain(value: object) -> object:
    """Dates and timestamps as ISO text; everything else unchanged."""
    return value.isoformat() if hasattr(value, "isoformat") else value
