"""Store commands: the host budget (`bioxen budget`) and the schema (`bioxen db`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from bioxen_flows.cli import output
from bioxen_flows.cli.commands import Commands

if TYPE_CHECKING:
    from bioxen_flows.state import StateStore


def register(commands: Commands) -> None:
    budget = commands.add("budget", cmd_budget, "show (or set) the host budget all VMs share")
    budget.add_argument("--ribosomes", type=int, metavar="N", help="set the ribosome budget")
    budget.add_argument("--atp", type=float, metavar="P",
                        help="set the ATP budget (%% of one cell's maximum)")
    db = commands.add("db", cmd_db, "the state store: schema status/upgrade, backup, restore")
    db_commands = Commands.nested(db, "db_command", required=True)
    for name, text in (("status", "the store's schema version"),
                       ("upgrade", "apply pending schema migrations"),
                       ("backup", "write a consistent copy (JSON lines) while others write"),
                       ("restore", "load a backup into this store (SQLite or PostgreSQL)")):
        sub = db_commands.add(name, cmd_db, text)
        if name in ("backup", "restore"):
            sub.add_argument("file", type=Path, metavar="FILE", help="the backup file")
        if name == "restore":
            sub.add_argument("--yes", action="store_true",
                             help="replace a store that is not empty")


def cmd_budget(args: argparse.Namespace) -> int:
    """Show the host budget and its use; with --ribosomes/--atp, change it first."""
    from bioxen_flows.state import StateStore

    store = StateStore()
    if args.ribosomes is not None or args.atp is not None:
        budget = store.set_budget(ribosomes=args.ribosomes, atp_percent=args.atp)
    else:
        budget = store.budget()
    if args.json:
        output.print_json(budget)
        return 0
    output.console().print(output.key_values("host budget", [
        ("ribosomes", f"{budget['ribosomes_allocated']:,} of {budget['ribosome_budget']:,} "
                      f"allocated; {budget['ribosomes_available']:,} available"),
        ("ATP share", f"{budget['atp_percent_allocated']:g} % of "
                      f"{budget['atp_budget_percent']:g} % allocated; "
                      f"{budget['atp_percent_available']:g} % available"),
    ]))
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    """`bioxen db upgrade` applies pending migrations; `bioxen db status` shows the schema."""
    from bioxen_flows.state import StateStore
    from bioxen_flows.state.schema import SCHEMA_VERSION

    store = StateStore()  # opening an older store upgrades it; say what happened
    if args.db_command in ("backup", "restore"):
        return _backup_or_restore(args, store)
    applied = store.upgrade() if args.db_command == "upgrade" else []
    info = {"url": store.display_url, "backend": store.backend,
            "schema_version": store.schema_version(), "code_schema_version": SCHEMA_VERSION,
            "applied": applied}
    if args.json:
        output.print_json(info)
    else:
        print(f"{info['url']}: schema {info['schema_version']} "
              f"(this BioXen: {SCHEMA_VERSION}); "
              + (f"applied {applied}" if applied else "up to date"))
    return 0


def _backup_or_restore(args: argparse.Namespace, store: StateStore) -> int:
    from bioxen_flows.backup import backup, restore

    if args.db_command == "backup":
        counts = backup(store, args.file)
    else:
        counts = restore(store, args.file, replace=args.yes)
        store.audit("-", "restore", {"file": str(args.file), "rows": counts})
    if args.json:
        output.print_json({"url": store.display_url, "file": str(args.file), "rows": counts})
    else:
        verb = "backed up" if args.db_command == "backup" else "restored"
        print(f"{verb} {store.display_url} {'to' if verb == 'backed up' else 'from'} "
              f"{args.file}: {counts['vms']} VM(s), {counts['audit']} audit entries")
    return 0
