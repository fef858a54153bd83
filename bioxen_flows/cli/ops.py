"""Operations commands: settings, quotas, the audit log, health (doctor) and gc."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bioxen_flows.cli import output
from bioxen_flows.cli.commands import Commands
from bioxen_flows.cli.prefect_session import no_telemetry
from bioxen_flows.errors import InputError

MAX_MIN_AGE_S = 10 * 365 * 86400.0  # `gc --min-age`: ten years spares every VM there is


def register(commands: Commands) -> None:
    add = commands.add
    add("settings", cmd_settings, "every BIOXEN_* setting: its value and where it came from")
    quota = add("quota", cmd_quota, "per-owner limits on live VMs, ribosomes and ATP")
    quota.set_defaults(quota_command=None)
    qset = Commands.nested(quota, "quota_command").add(
        "set", cmd_quota, "set an owner's limits",
        description="set an owner's limits (others stay)", json=False)
    qset.add_argument("--owner", required=True, help="user or project label")
    qset.add_argument("--vms", type=int, metavar="N", help="live VMs")
    qset.add_argument("--ribosomes", type=int, metavar="N", help="ribosomes allocated in total")
    qset.add_argument("--atp", type=float, metavar="P", help="ATP share in total, %%")
    qset.add_argument("--clear", action="store_true", help="remove the owner's quota")
    qset.add_argument("--json", action="store_true", help="machine-readable output")
    audit = add("audit", cmd_audit, "the audit log of every state change (oldest first)")
    audit.add_argument("--vm", metavar="VM_ID", help="only this VM's entries")
    audit.add_argument("--wide", action="store_true",
                       help="full times, actor, flow run and the whole detail")
    audit.add_argument("--since", metavar="ISO", help="only entries at or after (UTC if naive)")
    audit.add_argument("--limit", type=int, default=1000, metavar="N",
                       help="the most recent N entries (default 1000)")
    audit.add_argument("--jsonl", action="store_true",
                       help="export: every matching entry as JSON lines")
    doctor = add("doctor", cmd_doctor,
                 "check engine, store, Prefect API, XCP-ng pool and disk (exit 1 if any fails)")
    doctor.add_argument("--xcpng-config", type=Path, metavar="FILE",
                        help="also check the pool in this config's xcpng_config")
    gc = add("gc", cmd_gc,
             "find basic VMs whose flow run is over or process gone; --yes destroys",
             events=True)
    gc.add_argument("--yes", action="store_true", help="destroy them (default: list)")
    gc.add_argument("--min-age", type=float, metavar="S",
                    help="skip VMs younger than S seconds (default: gc_min_age_seconds)")


def cmd_settings(args: argparse.Namespace) -> int:
    """Each effective setting and where it came from (default, file, environment)."""
    from bioxen_flows.settings import describe, settings_file

    rows = describe()
    path = settings_file()
    present = path.is_file()
    if args.json:
        output.print_json({"settings_file": str(path), "settings_file_exists": present,
                           "settings": rows})
        return 0
    where = f"file: {path}" if present else f"no file {path}: defaults and environment only"
    output.console().print(output.table(
        f"settings ({where})", ("variable", "value", "source"),
        [(r["variable"], "" if r["value"] is None else r["value"], r["source"]) for r in rows]))
    return 0


def cmd_quota(args: argparse.Namespace) -> int:
    """`bioxen quota` lists owners' limits and use; `bioxen quota set --owner O ...` sets."""
    from bioxen_flows.state import StateStore

    store = StateStore()
    if args.quota_command == "set":
        if args.vms is None and args.ribosomes is None and args.atp is None and not args.clear:
            args.subparser.error("give at least one of --vms, --ribosomes, --atp or --clear")
        store.set_quota(args.owner, vms_limit=args.vms, ribosomes=args.ribosomes,
                        atp_percent=args.atp, clear=args.clear)
    rows = store.quotas()
    if args.json:
        output.print_json(rows)
        return 0
    if not rows:
        print("no quotas and no owned VMs; set one with: bioxen quota set --owner O --vms N")
        return 0

    def limit(used: Any, cap: Any, unit: str = "") -> str:
        return f"{used:g}{unit} of {'unlimited' if cap is None else f'{cap:g}{unit}'}"

    output.console().print(output.table("quotas", ("owner", "VMs", "ribosomes", "ATP share"), [
        (r["owner"], limit(r["vms"], r["vms_limit"]),
         limit(r["ribosomes"], r["ribosomes_limit"]),
         limit(r["atp_percent"], r["atp_percent_limit"], " %")) for r in rows]))
    return 0


def parse_since(text: str | None) -> float | None:
    """An ISO 8601 time (naive means UTC) as a Unix time."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"--since must be an ISO 8601 time like 2026-11-23T14:00, "
                         f"got {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")


def cmd_audit(args: argparse.Namespace) -> int:
    """The audit log, oldest first; --jsonl writes every matching entry, one per line."""
    from bioxen_flows.state import StateStore

    entries = StateStore().audit_log(args.vm, since=parse_since(args.since),
                                     limit=None if args.jsonl else args.limit)
    for entry in entries:
        entry["time"] = _iso(entry.pop("ts"))
    if args.jsonl:
        for entry in entries:
            sys.stdout.write(json.dumps(entry, sort_keys=True, allow_nan=False) + "\n")
        return 0
    if args.json:
        output.print_json(entries)
        return 0
    if not entries:
        print("no audit entries" + (f" for VM {args.vm}" if args.vm else ""))
        return 0
    if args.wide:  # everything, one line per entry, however wide
        output.wide_console().print(output.table(
            "audit log", ("time (UTC)", "VM", "action", "outcome", "actor", "flow run",
                          "detail"),
            [(e["time"], e["vm_id"], e["action"], e["outcome"] or "ok", e["actor"] or "",
              e["flow_run_id"] or "", json.dumps(e["detail"], sort_keys=True))
             for e in entries], whole=range(7), wide=True))
        return 0
    output.console().print(output.table(
        "audit log (UTC; --wide for actor, flow run and full detail)",
        ("time", "VM", "action", "outcome", "detail"),
        [(output.compact_time(e["time"]), e["vm_id"], e["action"], e["outcome"] or "ok",
          output.clip(_detail_text(e["detail"]), 60)) for e in entries],
        whole=(0, 1)))
    return 0


def _detail_text(detail: Any) -> str:
    """An entry's detail as `key=value` words, which wrap between them (JSON with --wide)."""
    if not isinstance(detail, dict):
        return "" if detail is None else json.dumps(detail)
    return " ".join(f"{k}={v if isinstance(v, (str, int, float)) else json.dumps(v)}"
                    for k, v in sorted(detail.items()))


def cmd_doctor(args: argparse.Namespace) -> int:
    """Exit 0 when every check passes, 1 otherwise."""
    from bioxen_flows.cli.config import xcpng_section
    from bioxen_flows.health import as_dicts, run_checks

    no_telemetry()
    checks = run_checks(xcpng_section(args.xcpng_config) if args.xcpng_config else None)
    healthy = all(check.ok for check in checks)
    if args.json:
        output.print_json({"ok": healthy, "checks": as_dicts(checks)})
    else:
        for check in checks:
            print(f"{'ok  ' if check.ok else 'FAIL'} {check.name:8} {check.detail} "
                  f"({check.seconds:.1f} s)")
    return 0 if healthy else 1


def cmd_gc(args: argparse.Namespace) -> int:
    """List orphaned basic VMs and why, and every VM skipped and why; destroy the orphans
    only with --yes, each line printed as it goes."""
    from bioxen_flows.orchestration.reaper import plan_reap, reap

    if args.min_age is not None and not 0 <= args.min_age <= MAX_MIN_AGE_S:  # nan fails too
        raise InputError(f"--min-age must be a number of seconds from 0 to {MAX_MIN_AGE_S:g}, "
                         f"got {args.min_age!r}")
    no_telemetry()
    orphans, skipped = plan_reap(min_age_seconds=args.min_age)
    if args.json:
        destroyed = reap(orphans) if args.yes else []
        output.print_json({"orphans": [vars(o) for o in orphans], "destroyed": destroyed,
                           "skipped": [vars(s) for s in skipped], "dry_run": not args.yes})
        return 0
    total = len(orphans)

    def said(orphan: Any, n: list[int] = [0]) -> None:  # noqa: B006 (a counter)
        n[0] += 1
        print(f"destroyed {orphan.vm_id}: {orphan.reason} [{n[0]}/{total}]", flush=True)

    if args.yes:
        reap(orphans, on_reaped=said)
    else:
        for orphan in orphans:
            print(f"would destroy {orphan.vm_id}: {orphan.reason}")
    for vm in skipped:
        when = (f"; eligible in {max(0.0, vm.eligible_at - time.time()):.0f} s, at "
                f"{time.strftime('%H:%M:%SZ', time.gmtime(vm.eligible_at))}"
                if vm.eligible_at else "")
        print(f"skipped {vm.vm_id}: {vm.why} ({vm.detail}){when}")
    if not orphans:
        print("no orphaned VMs" + (f" ({len(skipped)} skipped)" if skipped else ""))
    elif not args.yes:
        print(f"{len(orphans)} orphaned VM(s); run `bioxen gc --yes` to destroy them")
    return 0
