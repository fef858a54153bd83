"""Store commands: the host budget (`bioxen budget`) and the schema (`bioxen db`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from bioxen_flows.cli import output

if TYPE_CHECKING:
    from bioxen_flows.state import StateStore


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
