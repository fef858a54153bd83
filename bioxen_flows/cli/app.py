"""The entry point of `bioxen`: the root parser, the exit codes, logging.

Each command group registers its own commands (`GROUPS`, in the order `bioxen --help`
lists them). Only argparse is imported here; each command imports what it needs (rich, the
VM layer, Prefect) when it runs, so `bioxen --help` and `bioxen list` stay fast.
Exit codes: 0 ok, 1 user error (one line on stderr, no traceback), 2 usage (argparse, or
`args.subparser.error` in a command), 70 a bug, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bioxen_flows import __version__
from bioxen_flows.cli import (
    compare,
    completion,
    config,
    genome,
    interactive,
    ops,
    performance,
    results,
    store,
    sweep,
    vms,
    xcpng,
)
from bioxen_flows.cli.commands import Commands
from bioxen_flows.cli.output import error_text
from bioxen_flows.errors import BioXenError
from bioxen_flows.quick_exit import exit_after_handlers

GROUPS = (vms, store, ops, config, genome, compare, sweep, results, xcpng, performance,
          interactive, completion)

DESCRIPTION = """\
Biological virtual machines (simulated cells of {organisms}) from the shell.
VMs live in the state store under $BIOXEN_HOME (default ~/.bioxen), so one command can
create a VM and later ones start, run, inspect and destroy it."""

EPILOG = """\
examples:
  bioxen create lab1 syn3a --auto-start
  bioxen execute lab1 'install("gfp_reporter")' 'grow(minutes=120)'
  bioxen status lab1 --json
  bioxen monitor lab1 --interval 2 --count 5
  bioxen destroy lab1
  bioxen compare ecoli syn3a --hours 2
  bioxen sweep ecoli syn3a --strength 0.25,1,4 --copies 1,5,20 --hours 24
shell completion: eval "$(bioxen completion bash)"   (zsh, fish too)"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's and examples' line breaks; room for long command names."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)


def build_parser() -> argparse.ArgumentParser:
    """`bioxen` with every group's commands."""
    from bioxen_flows.organisms.profiles import get_supported_biological_types

    parser = argparse.ArgumentParser(
        prog="bioxen", epilog=EPILOG, formatter_class=_Formatter,
        description=DESCRIPTION.format(organisms=", ".join(get_supported_biological_types())),
    )
    parser.add_argument("--version", action="version", version=f"bioxen {__version__}")
    parser.add_argument("--log-format", choices=("text", "json"),
                        help="log lines as text or JSON (default: the log_format setting)")
    parser.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="lowest level logged (default: the log_level setting)")
    commands = Commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    for group in GROUPS:
        group.register(commands)
    return parser


EXIT_INTERNAL = 70  # EX_SOFTWARE: an exception BioXen did not mean (a bug; please report it)


def exit_code(exc: BaseException) -> int:
    """The one mapping from errors to exit codes (docs/cli.md): 1 for every error BioXen
    means (bad input, a lost race, the budget, the store, the XCP-ng pool) and for files
    the OS refused; `EXIT_INTERNAL` for anything else."""
    if isinstance(exc, (BioXenError, OSError)):
        return 1
    return EXIT_INTERNAL


def _error(exc: BaseException) -> int:
    code = exit_code(exc)
    text = error_text(exc)
    if code == EXIT_INTERNAL:
        text = (f"internal error: {type(exc).__name__}: {text} "
                "(set BIOXEN_DEBUG=1 for the traceback)")
    from bioxen_flows.redaction import redact

    print(f"bioxen: error: {redact(text)}", file=sys.stderr)  # no password, in any URL form
    return code


def _json_anywhere(argv: list[str]) -> list[str]:
    """`--json` may stand anywhere before `--`: move it to the end, where argparse takes it
    after the positionals (`bioxen execute VM --json CODE` is the same as `... CODE --json`)."""
    cut = argv.index("--") if "--" in argv else len(argv)
    head = [a for a in argv[:cut] if a != "--json"]
    if len(head) == cut:
        return argv
    return [*head, *argv[cut:], "--json"] if cut == len(argv) else [*head, "--json", *argv[cut:]]


def run() -> None:
    """The `bioxen` program: `main()`, every exit handler (Prefect sends its last logs and
    events, a temporary server stops), then the end of the process without tearing the
    interpreter down (`quick_exit`). `main()` itself returns, for callers in a process."""
    code = [1]  # an uncaught exception (BIOXEN_DEBUG=1) ends the process with 1
    exit_after_handlers(lambda: code[0])
    try:
        code[0] = main()
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        code[0] = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        raise
    sys.exit(code[0])


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: the command line), run the command, return its exit code."""
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # a shell asks for completions; argcomplete exits
        import argcomplete

        argcomplete.autocomplete(parser)
    args = parser.parse_args(_json_anywhere(list(sys.argv[1:] if argv is None else argv)))
    try:
        _configure_logging(args)
        _enable_events(args)
        return args.handler(args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `bioxen list --json | head -1`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:  # one line, never a traceback (BIOXEN_DEBUG=1 shows it)
        if _debug():
            raise
        return _error(exc)


def _configure_logging(args: argparse.Namespace) -> None:
    """--log-format/--log-level override the settings, for this process and the flows it
    runs (they read the same settings)."""
    from bioxen_flows.logs import configure_logging

    for option, variable in (("log_format", "BIOXEN_LOG_FORMAT"),
                             ("log_level", "BIOXEN_LOG_LEVEL")):
        if getattr(args, option):
            os.environ[variable] = getattr(args, option)
    configure_logging()


def _enable_events(args: argparse.Namespace) -> None:
    """Commands that change VMs (registered with ``events=True``) send their lifecycle
    events to Prefect when an API is configured (PREFECT_API_URL or a Prefect profile); the
    others never import Prefect."""
    if not args.sends_events:
        return
    profiles = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser() / "profiles.toml"
    if not os.environ.get("PREFECT_API_URL") and not profiles.exists():
        return
    from bioxen_flows.orchestration import events

    events.enable()


def _debug() -> bool:
    """BIOXEN_DEBUG; a bad settings value must not hide the error being reported."""
    from bioxen_flows.settings import get_settings

    try:
        return get_settings().debug
    except BioXenError:
        return False


if __name__ == "__main__":
    sys.exit(main())
