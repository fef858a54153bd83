# PYTHON_ARGCOMPLETE_OK
"""The `bioxen` command line; `run` is the console script and `python -m bioxen_flows`
(`main(argv)` returns the exit code, for callers in a process).

Modules: `app` (parser, entry point, exit codes), `vms` (VM commands), `tools` (config,
genome, compare, performance, completion), `interactive` (menu session), `output` (tables
and JSON). Importing this package imports argparse only.
"""

from bioxen_flows.cli.app import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
