"""`bioxen performance`: how long each VM operation takes on this machine, timed on
scratch VMs in a temporary store (the user's VMs are untouched)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bioxen_flows.cli import completion, output
from bioxen_flows.cli.commands import Commands
from bioxen_flows.errors import InputError


def register(commands: Commands) -> None:
    performance = commands.add("performance", cmd_performance,
                               "time VM operations on scratch VMs (your VMs are untouched)")
    performance.add_argument("organisms", nargs="*", metavar="BIO_TYPE",
                             help="default: syn3a").completer = completion.organisms  # type: ignore[attr-defined]
    performance.add_argument("--minutes", type=float, default=120.0,
                             help="simulated minutes grown per VM (default 120)")


def cmd_performance(args: argparse.Namespace) -> int:
    """Time every VM operation on scratch VMs in a temporary store (user state untouched).

    The library's performance monitor is per process, so a separate `bioxen` process has
    nothing to report about earlier commands; this measures this machine instead.
    """
    import tempfile

    from bioxen_flows.limits import MAX_GROW_MINUTES
    from bioxen_flows.performance import performance_monitor
    from bioxen_flows.state import StateStore
    from bioxen_flows.vm import create_bio_vm

    if not 0 < args.minutes <= MAX_GROW_MINUTES:  # one grow() call
        raise InputError(f"--minutes must be > 0 and <= {MAX_GROW_MINUTES:g}, "
                         f"got {args.minutes:g}")
    organisms = list(args.organisms or ["syn3a"])
    performance_monitor.reset()
    with tempfile.TemporaryDirectory(prefix="bioxen-performance-") as tmp:
        store = StateStore(Path(tmp) / "state.db")
        for organism in organisms:
            with performance_monitor.track("create_bio_vm"):
                vm = create_bio_vm(f"perf-{organism}", organism, store=store)
            try:
                vm.start()
                vm.execute_biological_process(f"grow(minutes={args.minutes!r})")
                vm.get_biological_metrics()
                vm.allocate(atp_percent=80.0)
                vm.pause()
                vm.resume()
                vm.stop()
            finally:
                vm.destroy()
    stats = performance_monitor.stats()
    if args.json:
        output.print_json({"organisms": organisms, "minutes": args.minutes, "operations": stats})
        return 0
    title = (f"VM operations on scratch {', '.join(organisms)} VMs, "
             f"{args.minutes:g} simulated min each (the first create compiles the model)")
    output.console().print(output.table(
        title, ("operation", "calls", "failures", "mean ms", "max ms", "total ms"),
        [(name, s["calls"], s["failures"], f"{1000 * s['mean_seconds']:.1f}",
          f"{1000 * s['max_seconds']:.1f}", f"{1000 * s['total_seconds']:.1f}")
         for name, s in stats.items()],
    ))
    return 0
