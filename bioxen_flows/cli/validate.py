"""Every `bioxen compare`, `bioxen sweep` and `bioxen export` option checked before work.

A bad option found inside a flow costs a server start (8-30 s) and prints Prefect's
traceback; here it is one line and exit 1. The limits are the flows' and the VM layer's
own checks (`check_compare_parameters`, `design_points`, `check_allocation`,
`resolve_package`), called here rather than copied.
"""

from __future__ import annotations

import argparse
import stat
import tempfile
from pathlib import Path
from typing import Any

from bioxen_flows.errors import InputError
from bioxen_flows.limits import MAX_HOURS, MAX_SEED
from bioxen_flows.validation import check_int

# results are sampled once a simulated minute: a shorter run has no growth curve to fit
MIN_HOURS = 1 / 60


def add_stochastic_arguments(parser: argparse.ArgumentParser) -> None:
    """--stochastic-engine and --no-division, for every command that makes stochastic cells."""
    from bioxen_flows.engine import STOCHASTIC_ENGINES

    parser.add_argument(
        "--stochastic-engine", choices=STOCHASTIC_ENGINES, default=STOCHASTIC_ENGINES[0],
        help="engine of stochastic cells: compiled (exact, compiled from the model; default) "
             "or roadrunner (libroadrunner's Gillespie, the reference; needs --no-division)")
    parser.add_argument("--no-division", action="store_true",
                        help="stochastic cells of fixed size (growth only dilutes) instead of "
                             "cells that grow and divide")


def stochastic_choice(args: argparse.Namespace) -> tuple[str, bool]:
    """(engine, division) of the command's stochastic cells, refused when they conflict."""
    engine, division = args.stochastic_engine, not args.no_division
    if division and engine != "compiled":
        raise InputError(
            f"--stochastic-engine {engine} runs cells of fixed size: add --no-division"
        )
    return engine, division


def check_compare(args: argparse.Namespace) -> list[str]:
    """Refuse any bad `compare` option; returns the organisms to compare. The checks that
    need no Prefect import come first, so most refusals take well under a second."""
    from bioxen_flows.organisms.profiles import get_supported_biological_types
    from bioxen_flows.vm.base import check_allocation

    organisms = list(args.organisms or get_supported_biological_types())
    _check_each_once(organisms)
    _check_hours(args.hours)
    if args.deterministic and args.seed is not None:
        raise InputError("give either --seed (stochastic) or --deterministic, not both")
    if args.seed is not None:  # replicate r runs with seed + r: each a VM's config seed
        check_int("--seed", args.seed, 0, MAX_SEED - (max(args.replicates, 1) - 1))
    check_allocation(args.atp, args.ribosomes)
    check_package(args.package)
    stochastic_choice(args)
    _check_infrastructure(args.vm_type, args.config)
    check_out_dir(args.out)
    from bioxen_flows.orchestration.compare import check_compare_parameters
    from bioxen_flows.orchestration.runners import check_workers

    stochastic = not args.deterministic and (args.seed is not None or args.replicates > 1)
    check_compare_parameters(organisms, args.replicates, args.hours, stochastic=stochastic)
    check_workers(args.workers)
    return organisms


def check_sweep(args: argparse.Namespace) -> None:
    """Refuse any bad `sweep` option (axes, package, design, output folder)."""
    from bioxen_flows.orchestration.design_space import design_points, parse_axis

    _check_each_once(list(args.organisms))
    _check_hours(args.hours)
    strengths = parse_axis(args.strength, "strength")
    copies = parse_axis(args.copies, "copies", integer=True)
    nutrients = parse_axis(args.nutrient, "nutrient") if args.nutrient else [None]
    if not 0 <= args.max_burden <= 100:
        raise InputError(f"--max-burden must be between 0 and 100 %, got {args.max_burden:g}")
    if getattr(args, "refine", False) and args.seed is not None:
        raise InputError("--refine needs a deterministic sweep (a stochastic yield is noisy): "
                         "drop --seed or --refine")
    stochastic_choice(args)
    design_points(args.organisms, args.package, strengths, [int(c) for c in copies], nutrients,
                  args.replicates, args.seed, args.hours)
    check_package(args.package)
    check_out_dir(args.out)
    from bioxen_flows.orchestration.runners import check_workers

    check_workers(args.workers)


def _check_each_once(organisms: list[str]) -> None:
    """`compare syn3a syn3a` would make one VM id twice: refused, saying what to use."""
    twice = sorted({o for o in organisms if organisms.count(o) > 1})
    if twice:
        raise InputError(f"organism {', '.join(twice)} given more than once; name each "
                         "organism once (--replicates gives more cells of one organism)")


def _check_hours(hours: Any) -> None:
    if not isinstance(hours, (int, float)) or not MIN_HOURS <= hours <= MAX_HOURS:  # and nan
        raise InputError(f"--hours must be from {MIN_HOURS * 60:g} simulated minute "
                         f"({MIN_HOURS:.4g} h) to {MAX_HOURS:g} h, got {hours!r}")


def check_package(package: str | None) -> None:
    """A built-in package, or a regular module file that loads (read size-bounded, compiled,
    checked against the host model); a name that is neither is said to be neither."""
    if package is None:
        return
    from bioxen_flows.model.guest import BUILTIN_PACKAGES
    from bioxen_flows.model.packages import resolve_package

    if package in BUILTIN_PACKAGES:
        return
    try:
        mode = Path(package).stat().st_mode
    except OSError:
        raise InputError(f"--package {package!r} is neither a built-in package "
                         f"({', '.join(BUILTIN_PACKAGES)}) nor an existing file") from None
    if not stat.S_ISREG(mode):
        raise InputError(f"--package {package!r} is not a regular file (a module is an "
                         ".ant/.xml/.sbml file)")
    resolve_package(package)


def _check_infrastructure(vm_type: str, config_path: Path | None) -> None:
    """VMs on a pool need its settings: a config file with the infrastructure's section
    (XCP-ng: xcpng_config)."""
    from bioxen_flows.vm import infrastructure

    section = infrastructure(vm_type).config_section
    if section is None:
        return
    if config_path is None:
        raise InputError(f"--vm-type {vm_type} needs --config FILE with an {section} section")
    from bioxen_flows.cli.config import xcpng_section
    from bioxen_flows.xcpng.backend import pool_config

    pool_config(xcpng_section(config_path))


def check_output_file(path: Path, option: str = "--output") -> Path:
    """A file a command will write, resolved: new or a regular file, never the state store
    (output_files.check_output_path), in a folder this user can write in."""
    from bioxen_flows.output_files import check_output_path, store_files
    from bioxen_flows.state import StateStore

    target = check_output_path(path, protected=store_files(StateStore().path), what=option)
    _check_writable(target.parent, f"{option} {path}")
    return target


def check_out_dir(out: str | Path) -> None:
    """The output folder is a folder (or can be made one) that this user can write in,
    proven by making and removing a file in it (or in its nearest existing parent)."""
    path = Path(out)
    if path.is_symlink() and not path.exists():
        raise InputError(f"--out {out}: a symbolic link to nothing; give a folder")
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {out} is not a folder; give a folder for the results")
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    _check_writable(existing, f"--out {out}")


def _check_writable(folder: Path, what: str) -> None:
    """`folder` is an existing folder this user can make a file in (tried, then removed)."""
    if not folder.is_dir():
        raise InputError(f"{what}: {folder} is not an existing folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise InputError(f"{what}: cannot write in {folder} "
                         f"({exc.strerror or type(exc).__name__})") from None
