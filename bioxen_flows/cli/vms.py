"""VM commands: create, list, lifecycle, status, execute, install, export, resources,
allocate, monitor, optimize.

Each command loads the VM from the state store, acts, and lets the library persist the
result, so the next command (another process) sees it. Heavy imports stay inside functions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bioxen_flows.cli import completion, export, output
from bioxen_flows.cli.commands import Commands
from bioxen_flows.cli.validate import add_stochastic_arguments, stochastic_choice
from bioxen_flows.errors import InputError, NotFoundError
from bioxen_flows.vm_types import VM_TYPES

if TYPE_CHECKING:
    from bioxen_flows.vm import BiologicalVM



def register(commands: Commands) -> None:
    """Every VM command, in the order `bioxen --help` lists them."""
    from bioxen_flows.organisms.profiles import get_supported_biological_types

    add = commands.add

    def vm_id(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("vm_id", metavar="VM_ID").completer = completion.vm_ids  # type: ignore[attr-defined]

    create = add("create", cmd_create, "create a bio-VM (state: created)", events=True)
    create.add_argument("vm_id", metavar="VM_ID", help="1-64 characters from A-Z a-z 0-9 _ . -")
    create.add_argument(
        "bio_type", metavar="BIO_TYPE",
        help=f"organism: {', '.join(get_supported_biological_types())}",
    ).completer = completion.organisms  # type: ignore[attr-defined]
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

    listing = add("list", cmd_list, "list VMs with state, uptime and infrastructure")
    listing.add_argument("--wide", action="store_true",
                         help="one line per VM however wide the terminal (for wide screens)")
    for action, text in (("start", "start a created or stopped VM"),
                         ("stop", "stop a running or paused VM"),
                         ("pause", "pause a running VM (its simulated clock stops)"),
                         ("resume", "resume a paused VM")):
        vm_id(add(action, cmd_lifecycle, text, events=True))
    destroy = add("destroy", cmd_destroy,
                  "destroy a VM: frees its cell and allocations, forgets it", events=True)
    vm_id(destroy)
    destroy.add_argument("--force", action="store_true",
                         help="remove the record even if it is damaged or busy")
    vm_id(add("status", cmd_status, "state, allocations and metrics of a VM"))

    execute = add("execute", cmd_execute, "run a process program on a running VM")
    vm_id(execute)
    execute.add_argument("code", nargs="*", metavar="CODE",
                         help="process lines, one call each, e.g. 'grow(minutes=60)'")
    execute.add_argument("--file", type=Path, metavar="F",
                         help="read the program from F (- for stdin)")

    install = add("install", cmd_install, "install a package (built-in name or module file)")
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

    vm_id(add("resources", cmd_resources, "resource usage, caps and recommendations"))
    allocate = add("allocate", cmd_allocate, "cap a VM's energy supply and/or ribosomes")
    vm_id(allocate)
    allocate.add_argument("--atp", type=float, metavar="P", help="energy cap, %% of the maximum")
    allocate.add_argument("--ribosomes", type=int, metavar="N", help="ribosome cap")

    monitor = add("monitor", cmd_monitor, "sample resource usage until Ctrl-C or --count",
                  events=True)
    vm_id(monitor)
    monitor.add_argument("--interval", type=float, default=5.0, metavar="S",
                         help="seconds between samples (default 5)")
    monitor.add_argument("--count", type=int, metavar="N", help="stop after N samples")

    optimize = add("optimize", cmd_optimize,
                   "find and apply the smallest caps that keep most of the growth")
    vm_id(optimize)
    optimize.add_argument("--keep-growth", type=float, default=0.95, metavar="F",
                          help="fraction of uncapped growth to keep (default 0.95)")


def load_vm(vm_id: str) -> BiologicalVM:
    """The VM as the store has it (any process may have changed it since)."""
    from bioxen_flows.vm import load_bio_vm

    return load_bio_vm(vm_id)


def _config_from_file(path: Path, bio_type: str, vm_type: str | None) -> tuple[dict, str]:
    """A config file's settings for `create`; the file must not name another organism."""
    from bioxen_flows.config import ConfigManager

    config = ConfigManager().load_from_file(path)
    named = config.pop("biological_type", None)
    if named is not None and named != bio_type:
        raise InputError(f"{path} is a config for {named!r}, but {bio_type!r} was requested")
    file_vm_type = config.pop("vm_type", "basic")
    return config, vm_type or file_vm_type


def cmd_create(args: argparse.Namespace) -> int:
    """Create a VM (validated and rolled back by the factory on any error)."""
    from bioxen_flows.vm import create_bio_vm

    config, vm_type = None, args.vm_type or "basic"
    if args.config is not None:
        config, vm_type = _config_from_file(args.config, args.bio_type, args.vm_type)
    engine, division = stochastic_choice(args)
    if args.seed is not None:  # checked with the rest of the config by the factory
        config = dict(config or {})
        config["simulation"] = {**config.get("simulation", {}), "stochastic": True,
                                "seed": args.seed}
    if (config or {}).get("simulation", {}).get("stochastic"):
        config["simulation"] = {**config["simulation"], "stochastic_engine": engine,  # type: ignore[index]
                                "division": division}
    vm = create_bio_vm(args.vm_id, args.bio_type, vm_type, config, owner=args.owner)
    if args.auto_start:
        vm.start()
    status = vm.get_status()
    if args.json:
        output.print_json(status)
    else:
        print(f"created VM {vm.vm_id} ({status['biological_type']} on {status['vm_type']}): "
              f"{status['state']}; allocations: {output.allocations(status['allocations'])}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Every VM in the store; reads SQLite only (no cell is built, no model compiled)."""
    from bioxen_flows.vm import list_bio_vms

    vms = list_bio_vms()
    if args.json:
        output.print_json(vms)
        return 0
    if not vms:
        print("no VMs; create one with: bioxen create VM_ID syn3a")
        return 0
    if len(vms) > PLAIN_LIST_ROWS:
        print(output.plain_table(VM_COLUMNS, _vm_rows(vms)))
    else:
        (output.wide_console() if args.wide else output.console()).print(
            vms_table(vms, wide=args.wide))
    return 0


VM_COLUMNS = ("VM", "organism", "infra", "state", "uptime", "sim time", "caps")
PLAIN_LIST_ROWS = 100  # longer lists print as padded text (fast) instead of a rich table


def vms_table(vms: list[dict[str, Any]], *, wide: bool = False) -> Any:
    """The VM list as people read it (shared with the interactive session)."""
    return output.table(None, VM_COLUMNS, _vm_rows(vms), wide=wide)


def _vm_rows(vms: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [
        (vm["vm_id"], vm["biological_type"], vm["vm_type"],
         vm["state"] if not vm.get("damaged") else f"damaged: {vm['damaged']}",
         output.duration(vm["uptime_seconds"]),
         f"{output.number(vm['simulated_time_min'])} min", output.allocations(vm["allocations"]))
        for vm in vms
    ]


def cmd_lifecycle(args: argparse.Namespace) -> int:
    """start / stop / pause / resume / destroy: the library checks the transition."""
    vm = load_vm(args.vm_id)
    getattr(vm, args.command)()
    if args.json:
        output.print_json({"vm_id": vm.vm_id, "state": vm.state})
    else:
        print(f"VM {vm.vm_id}: {vm.state}")
    return 0


def cmd_destroy(args: argparse.Namespace) -> int:
    """Destroy a VM; --force removes a record that cannot be loaded (damaged or stuck)."""
    from bioxen_flows.vm import force_destroy_vm

    if args.force:
        if not force_destroy_vm(args.vm_id):
            raise NotFoundError(f"no VM {args.vm_id!r}")
    else:
        load_vm(args.vm_id).destroy()
    if args.json:
        output.print_json({"vm_id": args.vm_id, "state": "destroyed"})
    else:
        print(f"VM {args.vm_id}: destroyed")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Lifecycle, allocations and the cell's metrics; --json adds the stored config.

    The metrics are those recorded with the VM's current state (no model is compiled);
    only a VM without them (e.g. on XCP-ng) is asked to compute them."""
    vm = load_vm(args.vm_id)
    status = vm.get_status()
    metrics = vm.recorded_metrics() or vm.get_biological_metrics()
    if args.json:
        output.print_json({**status, "config": vm.record.config, "metrics": metrics})
        return 0
    genome = vm.record.config.get("genome") or {}
    out = output.console()
    out.print(output.key_values(f"VM {vm.vm_id}", [
        ("state", status["state"]),
        ("organism", status["biological_type"]),
        ("infrastructure", status["vm_type"]),
        ("uptime", output.duration(status["uptime_seconds"])),
        ("allocations", output.allocations(status["allocations"])),
        ("genome", genome.get("genbank_file") or "-"),
    ]))
    out.print()
    out.print(output.key_values("metrics", output.metrics_rows(metrics)))
    return 0


def _program(args: argparse.Namespace) -> str:
    """The program text: CODE arguments are its lines, or --file (- for stdin)."""
    if args.file is not None and args.code:
        args.subparser.error("give the program as CODE or with --file, not both")
    if args.file is not None:
        from bioxen_flows.engine.process_language import MAX_CODE_CHARS
        from bioxen_flows.files import read_text_file

        limit = 4 * MAX_CODE_CHARS  # bytes: the parser then counts characters
        if str(args.file) != "-":
            return read_text_file(args.file, max_bytes=limit, what="program file")
        text = sys.stdin.read(limit + 1)
        if len(text) > limit:
            raise InputError(f"the program on stdin is longer than {limit:,} characters")
        return text
    if not args.code:
        args.subparser.error("give the program as CODE (one argument per line) or --file F")
    return "\n".join(args.code)


def cmd_execute(args: argparse.Namespace) -> int:
    """Run a program; the library parses all of it first, so a bad line changes nothing."""
    from bioxen_flows.progress import running_program

    code = _program(args)
    vm = load_vm(args.vm_id)
    with running_program(vm.vm_id):  # `bioxen monitor` shows its clock advancing
        result = vm.execute_biological_process(code)
    if args.json:
        output.print_json(result)
        return 0
    out = output.console()
    calls = result["calls"]
    shown = "; ".join(calls if len(calls) <= 4 else [*calls[:3], f"... {calls[-1]}"])
    out.print(f"VM {vm.vm_id}: ran {len(calls)} call{'s' * (len(calls) != 1)}: {shown}")
    out.print(output.key_values("result", output.metrics_rows(result["summary"])))
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    """Install outside a program (allowed in any live state, not only running)."""
    vm = load_vm(args.vm_id)
    installed = vm.install_biological_package(args.package, args.copies)
    if args.json:
        output.print_json(installed)
    else:
        operons = f", operons {', '.join(installed['operons'])}" if installed["operons"] else ""
        print(f"VM {vm.vm_id}: installed {installed['package']} (genes "
              f"{', '.join(installed['genes'])}{operons}; copies {installed['copies']})")
    return 0


def cmd_resources(args: argparse.Namespace) -> int:
    """What the cell uses now, its caps, and the model's advice."""
    from bioxen_flows.resources import BioResourceManager

    vm = load_vm(args.vm_id)
    manager = BioResourceManager(vm)
    usage = manager.get_resource_usage()
    recommendations = manager.get_optimization_recommendations()
    if args.json:
        output.print_json({"vm_id": vm.vm_id, "allocations": vm.record.allocations,
                           "usage": usage, "recommendations": recommendations})
        return 0
    used = usage["ribosome_allocation_used_percent"]
    out = output.console()
    out.print(output.key_values(f"VM {vm.vm_id} resources", [
        ("allocations", output.allocations(vm.record.allocations)),
        ("simulated time", f"{output.number(usage['simulated_time_min'])} min"),
        ("atp_percent", f"{output.number(usage['atp_percent'])} % "
                        f"(cap {output.number(usage['atp_cap_percent'])} %)"),
        ("ribosomes", f"{output.number(usage['ribosomes_total'])} (free "
                      f"{output.number(usage['ribosomes_free'])}, translating "
                      f"{output.number(usage['ribosomes_translating'])})"),
        ("ribosome utilization", f"{output.number(usage['ribosome_utilization_percent'])} %"),
        ("ribosome cap used", "uncapped" if used is None else f"{output.number(used)} %"),
        ("growth rate", f"{output.number(usage['growth_rate_per_min'])} 1/min"),
    ]))
    if recommendations:
        out.print(output.table("recommendations", ("kind", "metric", "value", "advice"), [
            (r["kind"], r["metric"], output.number(r["value"]), r["message"])
            for r in recommendations
        ]))
    else:
        out.print("no recommendations")
    return 0


def cmd_allocate(args: argparse.Namespace) -> int:
    """Set both caps or neither (the host budget is checked first)."""
    if args.atp is None and args.ribosomes is None:
        args.subparser.error("give --atp P and/or --ribosomes N")
    vm = load_vm(args.vm_id)
    allocations = vm.allocate(atp_percent=args.atp, ribosomes=args.ribosomes)
    if args.json:
        output.print_json({"vm_id": vm.vm_id, "allocations": allocations})
    else:
        print(f"VM {vm.vm_id}: allocations {output.allocations(allocations)}")
    return 0


MAX_MONITOR_INTERVAL = 86_400.0  # one sample a day at least

MONITOR_COLUMNS = ("time", "simulated min", "atp %", "atp cap %", "ribosomes", "util %",
                   "growth 1/min", "alerts")


def _sample(vm_id: str) -> dict[str, Any]:
    """One usage sample of the VM as stored now (so changes by other processes show)."""
    from bioxen_flows.progress import program_minutes
    from bioxen_flows.resources import BioResourceManager

    sample = BioResourceManager(load_vm(vm_id)).get_resource_usage()
    running = program_minutes(vm_id)  # a program running in another process: its clock
    sample["program_running"] = running is not None
    if running is not None:
        sample["simulated_time_min"] += running
    return sample


def _alerts(sample: dict[str, Any]) -> list[str]:
    """The resource manager's alert rules (docs/api.md, Alerts) applied to one sample."""
    from bioxen_flows.resources.manager import alerts_for

    return [alert["kind"] for alert in alerts_for(sample)]


def _report_alerts(vm_id: str, sample: dict[str, Any], kinds: set[str]) -> None:
    """New alerts as Prefect events, when the CLI sends events (a Prefect API is set)."""
    if "bioxen_flows.orchestration.events" not in sys.modules:  # events are off
        return
    from bioxen_flows.orchestration import events
    from bioxen_flows.resources.manager import alerts_for
    from bioxen_flows.state import StateStore

    record = StateStore().find_vm(vm_id)
    if record is not None:
        events.emit_vm_alerts(vm_id, events.record_labels(record),
                              [a for a in alerts_for(sample) if a["kind"] in kinds])


def _monitor_row(sample: dict[str, Any]) -> tuple[str, ...]:
    """One sample as the table row (and the tab-separated line) shows it."""
    return (
        time.strftime("%H:%M:%S", time.localtime(sample["timestamp"])),
        output.number(sample["simulated_time_min"]) + (" (running)" if sample.get(
            "program_running") else ""), output.number(sample["atp_percent"]),
        output.number(sample["atp_cap_percent"]), output.number(sample["ribosomes_total"]),
        output.number(sample["ribosome_utilization_percent"]),
        output.number(sample["growth_rate_per_min"]),
        ", ".join(alert_label(a) for a in alerts_for_sample(sample)) or "-",
    )


def alerts_for_sample(sample: dict[str, Any]) -> list[dict[str, Any]]:
    from bioxen_flows.resources.manager import alerts_for

    return alerts_for(sample)


def alert_label(alert: dict[str, Any]) -> str:
    """An alert as the monitor shows it: ribosomes above their allocation are `over cap`,
    not `near cap` (the alert kind, for events and automations, stays the same)."""
    value = alert["value"]
    if alert["kind"] == "ribosomes_near_cap":
        return f"ribosomes {'over' if value > 100 else 'near'} cap ({value:.0f} %)"
    if alert["kind"] == "low_atp":
        return f"low ATP ({value:.3g} %)"
    return str(alert["kind"])


def cmd_monitor(args: argparse.Namespace) -> int:
    """Sample until Ctrl-C (exit 0) or --count: a live table on a terminal, lines otherwise."""
    if not 0 < args.interval <= MAX_MONITOR_INTERVAL:  # also refuses nan and inf
        raise InputError(f"--interval must be > 0 and <= {MAX_MONITOR_INTERVAL:g} seconds, "
                         f"got {args.interval:g}")
    if args.count is not None and args.count < 1:
        raise InputError(f"--count must be >= 1, got {args.count}")
    samples: list[dict[str, Any]] = []

    def take() -> bool:
        """Take one sample; False when --count samples have been taken."""
        if samples:
            time.sleep(args.interval)
        samples.append({**_sample(args.vm_id), "alerts": []})
        samples[-1]["alerts"] = _alerts(samples[-1])
        raised = set(samples[-1]["alerts"]) - set(samples[-2]["alerts"] if len(samples) > 1
                                                  else ())
        if raised:  # an alert that appears, once (not one event per sample)
            _report_alerts(args.vm_id, samples[-1], raised)
        return args.count is None or len(samples) < args.count

    try:
        if args.json:  # JSON lines: one object per sample, flushed as it comes
            more = True
            while more:
                more = take()
                output.print_json({"vm_id": args.vm_id, **samples[-1]}, indent=None)
        elif sys.stdout.isatty():
            from rich.live import Live

            def render() -> Any:
                title = f"VM {args.vm_id}: every {args.interval:g} s (Ctrl-C to stop)"
                return output.table(title, MONITOR_COLUMNS, map(_monitor_row, samples[-20:]))

            more = take()
            with Live(render(), console=output.console(), auto_refresh=False) as live:
                while more:
                    more = take()
                    live.update(render(), refresh=True)
        else:
            print("\t".join(MONITOR_COLUMNS), flush=True)
            more = True
            while more:
                more = take()
                print("\t".join(_monitor_row(samples[-1])), flush=True)
    except KeyboardInterrupt:
        pass  # stopping a monitor is how it normally ends
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    """Ask the model for the smallest caps keeping --keep-growth of growth, and apply them."""
    from bioxen_flows.resources import BioResourceManager

    vm = load_vm(args.vm_id)
    result = BioResourceManager(vm).auto_optimize_resources(keep_growth=args.keep_growth)
    if args.json:
        output.print_json({"vm_id": vm.vm_id, **result})
        return 0
    pct = "{:.1f} %".format
    output.console().print(output.key_values(f"VM {vm.vm_id}: applied caps", [
        ("ATP cap", f"{output.number(result['atp_percent'])} % of the maximal energy supply: "
                    f"alone keeps {pct(100 * result['atp_cap_alone_kept_fraction'])} of "
                    "growth"),
        ("ribosome cap", f"{output.number(result['ribosomes'])}: alone keeps "
                         f"{pct(100 * result['ribosome_cap_alone_kept_fraction'])} of growth"),
        ("both caps", f"keep {pct(100 * result['growth_kept_fraction'])}: "
                      f"{output.number(result['growth_rate_per_min'])} of "
                      f"{output.number(result['uncapped_growth_rate_per_min'])} 1/min"),
        ("growth now", f"{output.number(result['current_growth_rate_per_min'])} 1/min, as "
                       "`status` shows it"),
    ]))
    import textwrap

    print(textwrap.fill(
        "The growth figures of the caps are balanced growth (a copy of the cell grown to "
        "steady state); the cell itself reaches them as it grows under the caps. The ATP cap "
        "limits energy supply; status's atp_percent is elongation's energy saturation, which "
        "a cap lowers only once supply binds.", width=min(output.console().width, 88)))
    return 0
