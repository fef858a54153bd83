# PYTHON_ARGCOMPLETE_OK
"""The `bioxen` command line; `main` is the console script and `python -m bioxen_flows`.

Modules: `app` (parser, entry point, exit codes), `vms` (VM commands), `tools` (config,
genome, compare, performance, completion), `interactive` (menu session), `output` (tables
and JSON). Importing this package imports argparse only.
"""

from bioxen_flows.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
