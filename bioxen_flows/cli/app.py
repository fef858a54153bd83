"""Parser and entry point of `bioxen`.

Only argparse is imported here; each command imports what it needs (rich, the VM layer,
Prefect) when it runs, so `bioxen --help` and `bioxen list` stay fast.
Exit codes: 0 ok, 1 user error (one line on stderr, no traceback), 2 usage (argparse, or
`args.subparser.error` in a command), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bioxen_flows import __version__
from bioxen_flows.cli import export, ops, results, store, sweep, tools, vms
from bioxen_flows.cli.output import error_text
from bioxen_flows.cli.validate import add_stochastic_arguments
from bioxen_flows.errors import BioXenError
from bioxen_flows.quick_exit import exit_after_handlers
from bioxen_flows.vm_types import VM_TYPES

ORGANISMS = ("syn3a", "ecoli", "minimal_cell")

DESCRIPTION = """\
Biological virtual machines (simulated cells of syn3a, ecoli, minimal_cell) from the shell.
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


Handler = Callable[[argparse.Namespace], int]


def _complete_vm_ids(prefix: str, **_: Any) -> list[str]:
    """Shell completion of VM ids from the state store (reads SQLite, builds no cell)."""
    from bioxen_flows.vm import list_bio_vms

    return [vm["vm_id"] for vm in list_bio_vms() if vm["vm_id"].startswith(prefix)]


def _complete_organisms(prefix: str, **_: Any) -> list[str]:
    return [o for o in ORGANISMS if o.startswith(prefix)]


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's and examples' line breaks; room for long command names."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bioxen", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"bioxen {__version__}")
    parser.add_argument("--log-format", choices=("text", "json"),
                        help="log lines as text or JSON (default: the log_format setting)")
    parser.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="lowest level logged (default: the log_level setting)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, handler: Handler, help: str, *, json: bool = True
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler, subparser=sub)
        if json:
            sub.add_argument("--json", action="store_true", help="machine-readable output")
        return sub

    def vm_id(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("vm_id", metavar="VM_ID").completer = _complete_vm_ids  # type: ignore[attr-defined]

    # ---- VMs -------------------------------------------------------------------------
    create = add("create", vms.cmd_create, "create a bio-VM (state: created)")
    create.add_argument("vm_id", metavar="VM_ID", help="1-64 characters from A-Z a-z 0-9 _ . -")
    create.add_argument(
        "bio_type", metavar="BIO_TYPE", help=f"organism: {', '.join(ORGANISMS)}"
    ).completer = _complete_organisms  # type: ignore[attr-defined]
    create.add_argument("--vm-type", choices=VM_TYPES,
                        help="infrastructure (default: the config file's, else basic)")
    create.add_argument("--config", type=Path, metavar="FILE",
                        help="JSON/YAML config (resources, simulation, packages, xcpng_config)")
    create.add_argument("--auto-start", action="store_true", help="start the VM once created")
    create.add_argument("--seed", type=int,
                        help="a stochastic cell with this seed (default: deterministic)")
    add_stochastic_arguments(create)
    create.add_argument("--owner", help="user or project whose quota it counts against "
                                        "(default: the owner setting, your user name)")

    listing = add("list", vms.cmd_list, "list VMs with state, uptime and infrastructure")
    listing.add_argument("--wide", action="store_true",
                         help="one line per VM however wide the terminal (for wide screens)")
    for action, text in (("start", "start a created or stopped VM"),
                         ("stop", "stop a running or paused VM"),
                         ("pause", "pause a running VM (its simulated clock stops)"),
                         ("resume", "resume a paused VM")):
        vm_id(add(action, vms.cmd_lifecycle, text))
    destroy = add("destroy", vms.cmd_destroy,
                  "destroy a VM: frees its cell and allocations, forgets it")
    vm_id(destroy)
    destroy.add_argument("--force", action="store_true",
                         help="remove the record even if it is damaged or busy")
    vm_id(add("status", vms.cmd_status, "state, allocations and metrics of a VM"))

    execute = add("execute", vms.cmd_execute, "run a process program on a running VM")
    vm_id(execute)
    execute.add_argument("code", nargs="*", metavar="CODE",
                         help="process lines, one call each, e.g. 'grow(minutes=60)'")
    execute.add_argument("--file", type=Path, metavar="F",
                         help="read the program from F (- for stdin)")

    install = add("install", vms.cmd_install, "install a package (built-in name or module file)")
    vm_id(install)
    install.add_argument("package", metavar="PACKAGE",
                         help="gfp_reporter, lac_operon, rfp_plasmid, or an .ant/.xml/.sbml file")
    install.add_argument("--copies", type=int, help="gene copies (default: the package's own)")

    exporter = add("export", export.cmd_export,
                   "write a VM's whole model as SBML or Antimony (current state as initial "
                   "values)", json=False)
    vm_id(exporter)
    exporter.add_argument("--format", choices=("sbml", "antimony"), default="sbml",
                          help="default: sbml (level 3)")
    exporter.add_argument("--output", "-o", type=Path, metavar="FILE",
                          help="write to FILE instead of standard output")

    vm_id(add("resources", vms.cmd_resources, "resource usage, caps and recommendations"))
    allocate = add("allocate", vms.cmd_allocate, "cap a VM's energy supply and/or ribosomes")
    vm_id(allocate)
    allocate.add_argument("--atp", type=float, metavar="P", help="energy cap, %% of the maximum")
    allocate.add_argument("--ribosomes", type=int, metavar="N", help="ribosome cap")

    monitor = add("monitor", vms.cmd_monitor, "sample resource usage until Ctrl-C or --count")
    vm_id(monitor)
    monitor.add_argument("--interval", type=float, default=5.0, metavar="S",
                         help="seconds between samples (default 5)")
    monitor.add_argument("--count", type=int, metavar="N", help="stop after N samples")

    optimize = add("optimize", vms.cmd_optimize,
                   "find and apply the smallest caps that keep most of the growth")
    vm_id(optimize)
    optimize.add_argument("--keep-growth", type=float, default=0.95, metavar="F",
                          help="fraction of uncapped growth to keep (default 0.95)")

    # ---- the store ------------------------------------------------------------------------
    budget = add("budget", store.cmd_budget, "show (or set) the host budget all VMs share")
    budget.add_argument("--ribosomes", type=int, metavar="N", help="set the ribosome budget")
    budget.add_argument("--atp", type=float, metavar="P",
                        help="set the ATP budget (%% of one cell's maximum)")
    db = add("db", store.cmd_db, "the state store: schema status/upgrade, backup, restore")
    db_commands = db.add_subparsers(dest="db_command", metavar="SUBCOMMAND", required=True)
    for name, text in (("status", "the store's schema version"),
                       ("upgrade", "apply pending schema migrations"),
                       ("backup", "write a consistent copy (JSON lines) while others write"),
                       ("restore", "load a backup into this store (SQLite or PostgreSQL)")):
        sub = db_commands.add_parser(name, help=text, description=text)
        sub.set_defaults(handler=store.cmd_db, subparser=sub)
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        if name in ("backup", "restore"):
            sub.add_argument("file", type=Path, metavar="FILE", help="the backup file")
        if name == "restore":
            sub.add_argument("--yes", action="store_true",
                             help="replace a store that is not empty")

    # ---- operations -------------------------------------------------------------------
    add("settings", ops.cmd_settings,
        "every BIOXEN_* setting: its value and where it came from")
    quota = add("quota", ops.cmd_quota, "per-owner limits on live VMs, ribosomes and ATP")
    quota.set_defaults(quota_command=None)
    quota_commands = quota.add_subparsers(dest="quota_command", metavar="SUBCOMMAND")
    qset = quota_commands.add_parser("set", help="set an owner's limits",
                                     description="set an owner's limits (others stay)")
    qset.set_defaults(handler=ops.cmd_quota, subparser=qset)
    qset.add_argument("--owner", required=True, help="user or project label")
    qset.add_argument("--vms", type=int, metavar="N", help="live VMs")
    qset.add_argument("--ribosomes", type=int, metavar="N", help="ribosomes allocated in total")
    qset.add_argument("--atp", type=float, metavar="P", help="ATP share in total, %%")
    qset.add_argument("--clear", action="store_true", help="remove the owner's quota")
    qset.add_argument("--json", action="store_true", help="machine-readable output")
    audit = add("audit", ops.cmd_audit, "the audit log of every state change (oldest first)")
    audit.add_argument("--vm", metavar="VM_ID", help="only this VM's entries")
    audit.add_argument("--wide", action="store_true",
                       help="full times, actor, flow run and the whole detail")
    audit.add_argument("--since", metavar="ISO", help="only entries at or after (UTC if naive)")
    audit.add_argument("--limit", type=int, default=1000, metavar="N",
                       help="the most recent N entries (default 1000)")
    audit.add_argument("--jsonl", action="store_true",
                       help="export: every matching entry as JSON lines")
    doctor = add("doctor", ops.cmd_doctor,
                 "check engine, store, Prefect API, XCP-ng pool and disk (exit 1 if any fails)")
    doctor.add_argument("--xcpng-config", type=Path, metavar="FILE",
                        help="also check the pool in this config's xcpng_config")
    gc_basic = add("gc", ops.cmd_gc,
                   "find basic VMs whose flow run is over or process gone; --yes destroys")
    gc_basic.add_argument("--yes", action="store_true", help="destroy them (default: list)")
    gc_basic.add_argument("--min-age", type=float, metavar="S",
                          help="skip VMs younger than S seconds (default: gc_min_age_seconds)")

    # ---- configuration, genome --------------------------------------------------------
    config = add("config", tools.cmd_config_help, "configuration templates and validation",
                 json=False)
    config_commands = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    template = config_commands.add_parser(
        "template", help="print a complete, valid config", description="print a valid config"
    )
    template.set_defaults(handler=tools.cmd_config_template, subparser=template)
    template.add_argument("bio_type", metavar="BIO_TYPE").completer = _complete_organisms  # type: ignore[attr-defined]
    template.add_argument("vm_type", metavar="VM_TYPE", nargs="?", default="basic",
                          help="basic (default) or xcpng")
    template.add_argument("--format", choices=("yaml", "json"),
                          help="default: yaml, or by the --output file's suffix")
    template.add_argument("--json", action="store_true", help="same as --format json")
    template.add_argument("--output", "-o", type=Path, metavar="FILE",
                          help="write the file (atomically) instead of printing it")
    validate = config_commands.add_parser(
        "validate", help="check a config file; lists each error",
        description="check a config file; lists each error and exits 1 if there is any",
    )
    validate.set_defaults(handler=tools.cmd_config_validate, subparser=validate)
    validate.add_argument("file", type=Path, metavar="FILE")
    validate.add_argument("--vm-type", metavar="T", help="default: the file's, else basic")
    validate.add_argument("--bio-type", metavar="B", help="default: the file's biological_type")
    validate.add_argument("--json", action="store_true", help="machine-readable output")

    genome = add("genome", tools.cmd_genome_help, "genome annotations", json=False)
    genome_commands = genome.add_subparsers(dest="genome_command", metavar="SUBCOMMAND")
    gimport = genome_commands.add_parser(
        "import", help="load a GenBank file and summarise it (optionally attach it to a VM)",
        description="load a GenBank file (first record) and summarise its genes",
    )
    gimport.set_defaults(handler=tools.cmd_genome_import, subparser=gimport)
    gimport.add_argument("file", type=Path, metavar="FILE.gb")
    gimport.add_argument("--essentiality", type=Path, metavar="CSV",
                         help="locus_tag,essentiality table (e.g. Breuer et al. 2019)")
    gimport.add_argument("--vm", metavar="VM_ID",
                         help="attach the genome to this VM").completer = _complete_vm_ids  # type: ignore[attr-defined]
    gimport.add_argument("--json", action="store_true", help="machine-readable output")

    # ---- flows and tools ----------------------------------------------------------------
    compare = add("compare", tools.cmd_compare,
                  "compare organisms with the compare-organisms Prefect flow")
    compare.add_argument("organisms", nargs="*", help=f"default: {' '.join(ORGANISMS)}"
                         ).completer = _complete_organisms  # type: ignore[attr-defined]
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

    sweep.add_parser(add)
    results.add_parser(add, lambda parent: parent.add_subparsers(
        dest="results_command", metavar="SUBCOMMAND"))

    xcpng = add("xcpng", tools.cmd_xcpng_help, "XCP-ng pool maintenance", json=False)
    xcpng_commands = xcpng.add_subparsers(dest="xcpng_command", metavar="SUBCOMMAND")
    gc = xcpng_commands.add_parser(
        "gc", help="list (and with --yes destroy) this installation's leaked VMs and disks",
        description="list this installation's XCP-ng VMs and orphaned disks whose VM record "
        "and flow run are gone and that are older than BIOXEN_GC_MIN_AGE_SECONDS "
        "(default 300), with the reason for each; destroy them only with --yes",
    )
    gc.set_defaults(handler=tools.cmd_xcpng_gc, subparser=gc)
    gc.add_argument("--config", type=Path, required=True, metavar="FILE",
                    help="config file with the xcpng_config section")
    gc.add_argument("--yes", action="store_true", help="destroy what is listed")
    gc.add_argument("--json", action="store_true", help="machine-readable output")
    add("guest", tools.cmd_guest,
        "inside an XCP-ng guest: run one JSON request from stdin (used over SSH)", json=False)

    performance = add("performance", tools.cmd_performance,
                      "time VM operations on scratch VMs (your VMs are untouched)")
    performance.add_argument("organisms", nargs="*", metavar="BIO_TYPE",
                             help="default: syn3a").completer = _complete_organisms  # type: ignore[attr-defined]
    performance.add_argument("--minutes", type=float, default=120.0,
                             help="simulated minutes grown per VM (default 120)")

    add("interactive", _interactive, "menu-driven session (plain prompts when not a TTY)",
        json=False)
    completion = add("completion", tools.cmd_completion,
                     "print a shell completion script (bash, zsh, fish)",
                     json=False)
    completion.add_argument("shell", choices=("bash", "zsh", "fish"))
    return parser


def _interactive(args: argparse.Namespace) -> int:
    from bioxen_flows.cli.interactive import run

    return run()


EXIT_INTERNAL = 70  # EX_SOFTWARE: an exception BioXen did not mean (a bug; please report it)


def exit_code(exc: BaseException) -> int:
    """The one mapping from errors to exit codes (docs/cli.md): 1 for every error BioXen
    means (bad input, a lost race, the budget, the store, the XCP-ng pool) and for files
    the OS refused; `EXIT_INTERNAL` for anything else."""
    import sqlite3

    if isinstance(exc, (BioXenError, ValueError, OSError, sqlite3.DatabaseError)):
        return 1
    return EXIT_INTERNAL


def _error(exc: BaseException) -> int:
    import sqlite3

    code = exit_code(exc)
    text = error_text(exc)
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, BioXenError):
        text = f"the state store cannot be read ({text}); check $BIOXEN_HOME/state.db"
    elif code == EXIT_INTERNAL:
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
    """Commands that change VMs send their lifecycle events to Prefect when an API is
    configured (PREFECT_API_URL or a Prefect profile); the others never import Prefect."""
    changes = {vms.cmd_create, vms.cmd_lifecycle, vms.cmd_destroy, vms.cmd_monitor, ops.cmd_gc,
               tools.cmd_xcpng_gc}
    if args.handler not in changes:
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
