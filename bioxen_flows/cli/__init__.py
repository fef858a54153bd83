# PYTHON_ARGCOMPLETE_OK
"""The `bioxen` command line; `run` is the console script and `python -m bioxen_flows`
(`main(argv)` returns the exit code, for callers in a process).

Modules: `app` (root parser, entry point, exit codes, logging); `commands` (how a group
registers its commands); one module per command group, each registering its own: `vms`
(with `export`), `store`, `ops`, `config`, `genome`, `compare`, `sweep`, `results`,
`xcpng` (with `guest`, the agent side), `performance`, `interactive`, `completion`;
`prefect_session` (the one place the CLI talks to Prefect: telemetry, API, run settings),
`progress_bar`, `validate` (options checked before work), `output` (tables and JSON).
Importing this package imports argparse only.
"""

from bioxen_flows.cli.app import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
