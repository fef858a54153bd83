"""Commands around the VMs: config, genome, compare (Prefect), performance, completion."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bioxen_flows.cli import output
from bioxen_flows.cli.validate import stochastic_choice
from bioxen_flows.errors import InputError
from bioxen_flows.orchestration.stopping import stop_on_signals

DEFAULT_ORGANISMS = ("syn3a", "ecoli", "minimal_cell")
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


# ---- config ----------------------------------------------------------------------------
def cmd_config_help(args: argparse.Namespace) -> int:
    args.subparser.error("choose a subcommand: template or validate")
    return 2


def cmd_config_template(args: argparse.Namespace) -> int:
    """A complete, valid config to start from (xcpng placeholders must be edited)."""
    from bioxen_flows.config import ConfigManager

    manager = ConfigManager()
    config = manager.generate_template_config(args.bio_type, args.vm_type)
    fmt = "json" if args.json else args.format  # None: yaml, or the --output suffix
    if args.output is not None:
        path = manager.save_to_file(config, args.output, format=fmt)
        print(f"wrote {path}")
    elif fmt == "json":
        output.print_json(config)
    else:
        import yaml

        sys.stdout.write(yaml.safe_dump(config, sort_keys=False))
    return 0


def _raw_config(path: Path) -> dict[str, Any]:
    """The mapping as written in the file; errors are one line ('path:line: ...')."""
    from bioxen_flows.config.manager import ConfigFileError, read_config_file

    data = read_config_file(path)
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}:1: top level must be a mapping")
    return data


def cmd_config_validate(args: argparse.Namespace) -> int:
    """Every schema and consistency error, one per line; exit 1 if there is any."""
    from bioxen_flows.config import ConfigManager

    data = _raw_config(args.file)
    vm_type = args.vm_type or data.get("vm_type") or "basic"
    bio_type = args.bio_type or data.get("biological_type")
    if not bio_type:
        raise InputError(f"{args.file} names no biological_type; pass --bio-type B")
    ok, errors = ConfigManager().validate_config(data, vm_type, bio_type)
    if args.json:
        output.print_json({"file": str(args.file), "vm_type": vm_type,
                           "biological_type": bio_type, "ok": ok, "errors": errors})
    elif ok:
        print(f"{args.file}: valid config for {bio_type} on {vm_type}")
    for error in errors:
        print(f"bioxen: error: {args.file}: {output.one_line(error)}", file=sys.stderr)
    return 0 if ok else 1


# ---- genome ----------------------------------------------------------------------------
def cmd_genome_help(args: argparse.Namespace) -> int:
    args.subparser.error("choose a subcommand: import")
    return 2


def cmd_xcpng_help(args: argparse.Namespace) -> int:
    args.subparser.error("choose a subcommand: gc")
    return 2


def cmd_genome_import(args: argparse.Namespace) -> int:
    """Summarise a GenBank file; with --vm, attach it (and --essentiality) to that VM."""
    from bioxen_flows.organisms.genome import load_essentiality_csv, load_genbank

    genome = load_genbank(args.file)
    summary: dict[str, Any] = {**genome.summary(), "description": genome.description,
                               "file": str(args.file.resolve())}
    if args.essentiality is not None:
        genome = genome.with_essentiality(load_essentiality_csv(args.essentiality))
        summary["essentiality"] = dict(Counter(genome.essentiality.values()))
    if args.vm is not None:
        from bioxen_flows.vm import load_bio_vm

        essentiality = str(args.essentiality.resolve()) if args.essentiality else None
        load_bio_vm(args.vm).attach_genome(str(args.file.resolve()), essentiality)
        summary["attached_to"] = args.vm
    if args.json:
        output.print_json(summary)
        return 0
    rows = [
        ("accession", summary["accession"]),
        ("description", summary["description"]),
        ("length", f"{output.number(summary['length_bp'])} bp"),
        ("protein-coding genes", summary["protein_coding"]),
        ("RNA genes", summary["rna"]),
        ("pseudogenes", summary["pseudogenes"]),
        ("genes in total", summary["total_genes"]),
    ]
    if "essentiality" in summary:
        rows.append(("essentiality", ", ".join(
            f"{k} {v}" for k, v in sorted(summary["essentiality"].items()))))
    if args.vm is not None:
        rows.append(("attached to VM", args.vm))
    output.console().print(output.key_values(str(args.file), rows))
    return 0


# ---- compare (Prefect) -----------------------------------------------------------------
SUMMARY_SHOWN = ("organism", "role", "replicates", "burden_percent", "growth_rate_per_min",
                 "growth_rate_per_min_sd", "doubling_time_min", "doubling_time_min_ci95_low",
                 "doubling_time_min_ci95_high", "ribosomes_total", "atp_percent")


def with_progress(run: Callable[[Callable[[int, int], None]], Any], total: int, *,
                   minutes_each: float | None = None, unit: str = "VMs",
                   name: str = "compare-organisms", cached_first: bool = False) -> Any:
    """A rich bar on a terminal: `unit`s done of `total`, elapsed and ETA. The flow calls
    the listener as whole batches finish; in between, the simulated minutes the cells have
    grown (`minutes_each` per unit, read from the worker processes every half second)
    move it within a VM, so the ETA shows from the first seconds. Log lines print above
    the bar, not onto it. `cached_first`: the flow's first report counts units done
    without growing a cell (a sweep's points from the cache)."""
    err = output.console(stderr=True)
    if not err.is_terminal:
        return run(lambda done, total: None)
    import threading

    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from bioxen_flows.progress import collecting, minutes_done, new_log_lines

    finished, cached = [0.0], [None]
    with collecting() as folder, Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
            TextColumn("{task.completed:.1f}/{task.total:g} " + unit), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=err,
            transient=True) as progress, logs_above(progress):
        bar = progress.add_task(name, total=total)
        lock = threading.Lock()

        offsets: dict[str, int] = {}

        def show() -> None:
            for line in new_log_lines(folder, offsets):  # the worker processes' logs
                progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
            grown = minutes_done(folder) / minutes_each if minutes_each else 0.0
            grown += cached[0] or 0
            with lock:  # never backwards: a finished batch counts whole
                done = max(finished[0], min(grown, total), progress.tasks[0].completed)
                progress.update(bar, completed=done)

        def listener(done: int, all_units: int) -> None:
            if cached_first and cached[0] is None:
                cached[0] = done
            finished[0] = float(done)
            show()

        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(0.5):
                show()

        poller = threading.Thread(target=poll, name="bioxen-progress", daemon=True)
        poller.start()
        try:
            return run(listener)
        finally:
            stop.set()
            poller.join()
            show()  # the last log lines


@contextmanager
def logs_above(progress: Any) -> Iterator[None]:
    """While `progress` shows, log handlers writing to the terminal's stderr write through
    its console, so each line prints above the bar instead of onto it."""
    from bioxen_flows.progress import redirect_console_logs, restore_console_logs

    swapped = redirect_console_logs(_AboveBar(progress))  # type: ignore[arg-type]
    try:
        yield
    finally:
        restore_console_logs(swapped)


class _AboveBar:
    """A file that prints whole lines above a live progress bar."""

    def __init__(self, progress: Any) -> None:
        self.progress, self.pending = progress, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.write("\n")

    def isatty(self) -> bool:
        return True


@contextmanager
def on_prefect_api(quiet: bool = False) -> Iterator[None]:
    """Within this block, flows report to the configured Prefect API or, without one, to a
    temporary server started here (and said so on stderr unless `quiet`). Its worker
    processes inherit the URL from the environment."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api_url, server_s = _start_prefect_api()
    if api_url is None:
        yield
        return
    if not quiet:
        from bioxen_flows.logs import notice

        notice(f"started Prefect's temporary server in {server_s:.1f} s "
               "(set PREFECT_API_URL to use a running one)")
    os.environ["PREFECT_API_URL"] = api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)


def _start_prefect_api() -> tuple[str | None, float]:
    """Start Prefect's temporary server unless an API is configured: (its URL, start s).

    Started here rather than by the flow, so its start (seconds on a fresh machine) is
    reported apart from the comparison's own time, and the worker processes share it.
    """
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None, 0.0
    began = time.perf_counter()
    server = _temporary_server_class()()
    server.start()
    return server.api_url, time.perf_counter() - began


def _temporary_server_class() -> type:
    """Prefect's temporary server, started so that it dies with this command (kill -9
    included) and a terminal's Ctrl-C reaches only the command (orchestration/stopping)."""
    import subprocess
    from functools import partial
    from types import SimpleNamespace

    import prefect.server.api.server as server_module

    from bioxen_flows.orchestration.stopping import helper_process_options

    class TemporaryServer(server_module.SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen:
            # Prefect builds the command; only how the process is started differs
            real = server_module.subprocess
            server_module.subprocess = SimpleNamespace(  # type: ignore[assignment]
                Popen=partial(subprocess.Popen, **helper_process_options()))
            try:
                return super()._run_uvicorn_command()
            finally:
                server_module.subprocess = real

    return TemporaryServer


@contextmanager
def interactive_run() -> Iterator[None]:
    """Prefect settings for a flow run started from this command line: no flow heartbeats,
    unless the user set their frequency. Heartbeats let the server detect a run whose
    worker died (the deployments in prefect.yaml set 30 s); this process reports its own
    end, and stopping Prefect's heartbeat thread takes up to a second after every run."""
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        get_current_settings,
        temporary_settings,
    )

    if "heartbeat_frequency" in get_current_settings().flows.model_fields_set:
        yield
        return
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def cmd_compare(args: argparse.Namespace) -> int:
    """Run the compare-organisms Prefect flow and print its summary table."""
    from bioxen_flows.cli.validate import check_compare

    check_compare(args)  # every option, before Prefect starts
    # An offline lab machine should not try to send Prefect telemetry.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from bioxen_flows.orchestration.batching import control_count
    from bioxen_flows.orchestration.compare import check_compare_parameters, compare_organisms
    from bioxen_flows.orchestration.execution import watch_progress
    from bioxen_flows.orchestration.runners import (
        check_workers,
        dask_cluster_threads,
        simulation_task_runner,
    )

    organisms = list(args.organisms or DEFAULT_ORGANISMS)
    check_compare_parameters(organisms, args.replicates, args.hours)
    check_workers(args.workers)
    if args.dask_address:  # the cluster's reach and store, before any flow starts
        if args.vm_type == "xcpng":
            raise InputError("--dask-address runs basic VMs; XCP-ng VMs are driven from here")
        dask_cluster_threads(args.dask_address)
    if args.deterministic and args.seed is not None:
        raise InputError("give either --seed (stochastic) or --deterministic, not both")
    replicates = 1 if args.deterministic else args.replicates
    stochastic = not args.deterministic and (args.seed is not None or replicates > 1)
    total = len(organisms) * (replicates + (control_count(replicates, stochastic)
                                            if args.package else 0))
    config = _flow_config(args.config)  # a bad config file is refused before any server
    engine, division = stochastic_choice(args)
    with stop_on_signals(), on_prefect_api(quiet=args.json):
        flow = compare_organisms.with_options(task_runner=simulation_task_runner(args.workers))

        def run(listener: Callable[[int, int], None]) -> Any:
            with interactive_run(), watch_progress(listener):
                return flow(
                    organisms=organisms,
                    replicates=replicates,
                    hours=args.hours,
                    package=args.package,
                    atp_percent=args.atp,
                    ribosomes=args.ribosomes,
                    seed=args.seed,
                    deterministic=args.deterministic,
                    out_dir=str(args.out),
                    vm_type=args.vm_type,
                    csv=args.csv,
                    config=config,
                    stochastic_engine=engine,
                    division=division,
                    dask_address=args.dask_address,
                    return_state=True,
                )

        state = with_progress(run, total, minutes_each=args.hours * 60)
    if state.is_cancelled():
        return stopped(state, args.json)
    result = state.result()
    if args.json:
        output.print_json(result)
        return 0
    import pandas as pd

    summary = pd.DataFrame(result["summary"])
    shown = [c for c in SUMMARY_SHOWN if c in summary and summary[c].notna().any()]
    with pd.option_context("display.width", 200, "display.float_format", "{:,.4g}".format):
        print(summary[shown].to_string(index=False, na_rep="-"))
    seeds = sorted({s for s in result["seeds"].values() if s is not None})
    from bioxen_flows.orchestration.reporting import burden_lines

    burdens = burden_lines(summary, stochastic=bool(seeds))
    if burdens:
        print("\n" + "\n".join(burdens))
    if seeds:
        print(f"\nstochastic replicates, seeds {seeds[0]}..{seeds[-1]} "
              "(the seed column of timeseries.parquet; --deterministic for one ODE cell)")
    print(f"\nresults in {result['out_dir']} ({result['latest']} points there):")
    print("\n".join(f"  {Path(path).name}" for path in result["paths"].values()))
    return 0


def stopped(state: Any, as_json: bool) -> int:
    """A run stopped by Ctrl-C/SIGTERM (or cancelled from the UI): one line saying what it
    kept, exit code 130."""
    from bioxen_flows.orchestration.stopping import EXIT_INTERRUPTED

    message = state.message or "the run was cancelled"
    if as_json:
        output.print_json({"state": "Cancelled", "message": message})
    print(f"bioxen: cancelled: {message}", file=sys.stderr)
    return EXIT_INTERRUPTED


def _flow_config(path: Path | None) -> dict[str, Any] | None:
    """The parts of a config file a flow passes to every VM (e.g. xcpng_config)."""
    if path is None:
        return None
    from bioxen_flows.config import ConfigManager

    config = ConfigManager().load_from_file(path)
    return {k: v for k, v in config.items() if k in ("xcpng_config", "simulation", "packages")}


# ---- XCP-ng ----------------------------------------------------------------------------
def cmd_xcpng_gc(args: argparse.Namespace) -> int:
    """List this installation's XCP-ng leftovers (VMs, orphaned disks) whose owner is gone,
    with the reason for each; destroy them only with --yes."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from bioxen_flows.orchestration.xcpng_tasks import plan_gc
    from bioxen_flows.xcpng.backend import destroy_leftovers, gc_min_age_seconds

    xcpng_config = (_flow_config(args.config) or {}).get("xcpng_config")
    if not xcpng_config:
        raise InputError(f"{args.config}: no xcpng_config section")
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


# ---- performance -----------------------------------------------------------------------
def cmd_performance(args: argparse.Namespace) -> int:
    """Time every VM operation on scratch VMs in a temporary store (user state untouched).

    The library's performance monitor is per process, so a separate `bioxen` process has
    nothing to report about earlier commands; this measures this machine instead.
    """
    import tempfile

    from bioxen_flows.performance import performance_monitor
    from bioxen_flows.state import StateStore
    from bioxen_flows.vm import create_bio_vm

    if not 0 < args.minutes <= 10080:
        raise InputError(f"--minutes must be > 0 and <= 10080, got {args.minutes:g}")
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


# ---- completion ------------------------------------------------------------------------
def cmd_completion(args: argparse.Namespace) -> int:
    """The argcomplete hook for `bioxen`; eval it in the shell's startup file."""
    import argcomplete

    sys.stdout.write(argcomplete.shellcode(["bioxen"], shell=args.shell))
    return 0
