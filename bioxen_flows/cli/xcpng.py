"""XCP-ng commands: `bioxen xcpng gc` (this installation's leaked VMs and disks on the pool)
and `bioxen guest` (the agent side, run inside a guest over SSH)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bioxen_flows.cli import output
from bioxen_flows.cli.commands import Commands


def register(commands: Commands) -> None:
    gc = commands.group("xcpng", "XCP-ng pool maintenance", ("gc",)).add(
        "gc", cmd_xcpng_gc,
        "list (and with --yes destroy) this installation's leaked VMs and disks",
        description="list this installation's XCP-ng VMs and orphaned disks whose VM record "
        "and flow run are gone and that are older than BIOXEN_GC_MIN_AGE_SECONDS "
        "(default 300), with the reason for each; destroy them only with --yes",
        json=False, events=True)
    gc.add_argument("--config", type=Path, required=True, metavar="FILE",
                    help="config file with the xcpng_config section")
    gc.add_argument("--yes", action="store_true", help="destroy what is listed")
    gc.add_argument("--json", action="store_true", help="machine-readable output")
    commands.add("guest", cmd_guest,
                 "inside an XCP-ng guest: run one JSON request from stdin (used over SSH)",
                 json=False)


def cmd_xcpng_gc(args: argparse.Namespace) -> int:
    """List this installation's XCP-ng leftovers (VMs, orphaned disks) whose owner is gone,
    with the reason for each; destroy them only with --yes."""
    from bioxen_flows.cli.config import xcpng_section
    from bioxen_flows.cli.prefect_session import no_telemetry

    no_telemetry()
    from bioxen_flows.orchestration.xcpng_tasks import plan_gc
    from bioxen_flows.xcpng.backend import destroy_leftovers, gc_min_age_seconds

    xcpng_config = xcpng_section(args.config)
    leftovers = plan_gc(xcpng_config, gc_min_age_seconds())
    doomed = [item for item in leftovers if item.destroy]
    destroyed = destroy_leftovers(xcpng_config, doomed) if args.yes else []
    if args.json:
        output.print_json({"leftovers": [item.as_dict() for item in leftovers],
                           "destroyed": destroyed})
        return 0
    for item in leftovers:
        verb = "destroy" if item.destroy else "keep"
        print(f"{verb:8} {item.kind:4} {item.name}: {item.reason}")
    if not args.yes:
        print(f"{len(doomed)} to destroy; nothing destroyed (run again with --yes)")
    else:
        print(f"destroyed {len(destroyed)}" + (f": {', '.join(destroyed)}" if destroyed else ""))
    return 0


def cmd_guest(args: argparse.Namespace) -> int:
    """Inside an XCP-ng guest: one JSON request on stdin, one JSON reply on stdout."""
    from bioxen_flows.cli.guest import main

    return main()
