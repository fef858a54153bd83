"""`bioxen config template|validate`, and the parts of a config file other commands read
(`flow_config` for compare's VMs, `xcpng_section` for the pool)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bioxen_flows.cli import completion, output
from bioxen_flows.cli.commands import Commands
from bioxen_flows.errors import InputError


def register(commands: Commands) -> None:
    sub = commands.group("config", "configuration templates and validation",
                         ("template", "validate"))
    template = sub.add("template", cmd_config_template, "print a complete, valid config",
                       description="print a valid config", json=False)
    template.add_argument("bio_type", metavar="BIO_TYPE").completer = completion.organisms  # type: ignore[attr-defined]
    template.add_argument("vm_type", metavar="VM_TYPE", nargs="?", default="basic",
                          help="basic (default) or xcpng")
    template.add_argument("--format", choices=("yaml", "json"),
                          help="default: yaml, or by the --output file's suffix")
    template.add_argument("--json", action="store_true", help="same as --format json")
    template.add_argument("--output", "-o", type=Path, metavar="FILE",
                          help="write the file (atomically) instead of printing it")
    validate = sub.add(
        "validate", cmd_config_validate, "check a config file; lists each error",
        description="check a config file; lists each error and exits 1 if there is any",
        json=False)
    validate.add_argument("file", type=Path, metavar="FILE")
    validate.add_argument("--vm-type", metavar="T", help="default: the file's, else basic")
    validate.add_argument("--bio-type", metavar="B", help="default: the file's biological_type")
    validate.add_argument("--json", action="store_true", help="machine-readable output")


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


def flow_config(path: Path | None) -> dict[str, Any] | None:
    """The parts of a config file a flow passes to every VM (e.g. xcpng_config)."""
    if path is None:
        return None
    from bioxen_flows.config import ConfigManager

    config = ConfigManager().load_from_file(path)
    return {k: v for k, v in config.items() if k in ("xcpng_config", "simulation", "packages")}


def xcpng_section(path: Path) -> dict[str, Any]:
    """The xcpng_config section of a config file; refused when it has none."""
    section = (flow_config(path) or {}).get("xcpng_config")
    if not section:
        raise InputError(f"{path}: no xcpng_config section")
    return section
