"""Load, save, validate and generate bio-VM configurations (plain dicts at the API boundary)."""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bioxen_flows.config.models import VMConfig
from bioxen_flows.errors import InputError
from bioxen_flows.organisms.profiles import get_profile, get_supported_biological_types
from bioxen_flows.vm_types import VM_TYPES

_SUFFIX_FORMAT = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}
MAX_CONFIG_BYTES = 1024 * 1024  # a config file is a regular file of at most 1 MiB


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with YAML 1.2 floats (`1e9` is a number, not a string),
    without aliases (`*name`), which could make a small file expand into a huge config,
    and without duplicate keys (PyYAML would silently keep the last)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in getattr(node, "value", []):
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class says so
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a config", event.start_mark
            )
        return super().compose_node(parent, index)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_config_text(text: str, fmt: str, path: Path | str) -> Any:
    """JSON or YAML text to Python data; syntax errors are `ConfigFileError` 'path:line: ...'."""
    if fmt == "json":
        try:
            return json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise ConfigFileError(f"{path}:{exc.lineno}: {exc.msg}") from None
        except ConfigFileError as exc:  # a duplicate key (the line is not known)
            raise ConfigFileError(f"{path}: {exc}") from None
        except RecursionError:
            raise ConfigFileError(f"{path}:1: nested too deeply") from None
    try:
        return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise ConfigFileError(f"{path}:{line}: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise ConfigFileError(f"{path}:1: nested too deeply") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (json keeps the last silently)."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ConfigFileError(f"duplicate key {key!r}")
        data[key] = value
    return data


def read_config_file(path: Path | str) -> Any:
    """A config file's data: a regular file of at most 1 MiB, JSON or YAML by suffix."""
    from bioxen_flows.files import read_text_file

    path = Path(path).expanduser()
    fmt = _format_of(path)
    return parse_config_text(read_text_file(path, max_bytes=MAX_CONFIG_BYTES,
                                            what="config file"), fmt, path)


class ConfigFileError(InputError):
    """A config file that cannot be parsed; the message starts with 'path:line:'."""


def _error_strings(exc: ValidationError) -> list[str]:
    """One 'field.path: rule' string per pydantic error, so users can find and fix each one."""
    out = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "<config>"
        out.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return out


def _has_password(value: Any) -> bool:
    if isinstance(value, dict):
        return "password" in value or any(_has_password(v) for v in value.values())
    return isinstance(value, list) and any(_has_password(v) for v in value)


def _format_of(path: Path, fmt: str | None = None) -> str:
    fmt = fmt or _SUFFIX_FORMAT.get(path.suffix.lower())
    if fmt not in ("json", "yaml"):
        raise InputError(f"{path}: cannot tell the format; use .json/.yaml/.yml or format=")
    return fmt


class ConfigManager:
    """Configuration for bio-VMs: organism defaults, files, validation and templates."""

    def __init__(self, search_paths: list[Path] | None = None) -> None:
        self._search_paths = search_paths

    @property
    def search_paths(self) -> list[Path]:
        """Discovery order; the default is expanded per call so cwd and HOME are current."""
        if self._search_paths is not None:
            return [Path(p).expanduser() for p in self._search_paths]
        exts = ("json", "yaml", "yml")
        return (
            [Path.cwd() / f"bioxen_config.{e}" for e in exts]
            + [Path.home() / ".bioxen" / f"config.{e}" for e in exts]
            + [Path("/etc/bioxen") / f"config.{e}" for e in exts]
        )

    def load_defaults(self, biological_type: str) -> dict[str, Any]:
        """Defaults for an organism: uncapped (no allocation), deterministic, no packages.

        Caps are opt-in: a VM that asks for nothing takes nothing from the host budget.
        """
        get_profile(biological_type)  # a clear error for an unknown organism
        return VMConfig(biological_type=biological_type).model_dump(exclude_none=True)

    def load_from_file(self, path: str | Path | None = None) -> dict[str, Any]:
        """Parse and schema-check a file (the first one found in discovery order if no path)."""
        if path is None:
            found = [p for p in self.search_paths if p.is_file()]
            if not found:
                searched = ", ".join(str(p) for p in self.search_paths)
                raise InputError(f"no configuration file found; searched: {searched}")
            path = found[0]
        path = Path(path).expanduser()
        data = read_config_file(path)
        if not isinstance(data, dict):
            raise ConfigFileError(f"{path}:1: top level must be a mapping")
        try:
            return VMConfig.model_validate(data).model_dump(exclude_none=True)
        except ValidationError as exc:
            raise ConfigFileError(f"{path}: " + "; ".join(_error_strings(exc))) from exc

    def save_to_file(
        self, config: dict[str, Any], path: str | Path, format: str | None = None
    ) -> Path:
        """Write atomically (never a half-written config) and never a password."""
        if _has_password(config):
            raise InputError("refusing to save a 'password' key; use password_env or a Secret")
        try:
            VMConfig.model_validate(config)
        except ValidationError as exc:
            raise InputError("invalid configuration: " + "; ".join(_error_strings(exc))) from exc
        path = Path(path).expanduser()
        fmt = _format_of(path, format)
        if fmt == "json":
            text = json.dumps(config, indent=2) + "\n"
        else:
            text = yaml.safe_dump(config, sort_keys=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def validate_config(
        self, config: dict[str, Any], vm_type: str, biological_type: str
    ) -> tuple[bool, list[str]]:
        """Check a config for a VM; each error reads 'field.path: rule'."""
        errors: list[str] = []
        if vm_type not in VM_TYPES:
            errors.append(f"vm_type: must be one of {', '.join(VM_TYPES)}, got {vm_type!r}")
        if biological_type not in get_supported_biological_types():
            choices = ", ".join(get_supported_biological_types())
            errors.append(f"biological_type: must be one of {choices}, got {biological_type!r}")
        if not isinstance(config, dict):
            return False, [*errors, "<config>: must be a mapping"]
        try:
            VMConfig.model_validate(config)
        except ValidationError as exc:
            errors.extend(_error_strings(exc))
        for key, wanted in (("vm_type", vm_type), ("biological_type", biological_type)):
            if key in config and config[key] != wanted:
                errors.append(f"{key}: config says {config[key]!r} but {wanted!r} was requested")
        if vm_type == "xcpng" and not config.get("xcpng_config"):
            errors.append("xcpng_config: required when vm_type is 'xcpng'")
        return not errors, errors

    def generate_template_config(
        self, biological_type: str, vm_type: str = "basic"
    ) -> dict[str, Any]:
        """A complete, valid starting point; xcpng placeholders must be edited before use."""
        config = self.load_defaults(biological_type)
        config["vm_type"] = vm_type
        if vm_type == "xcpng":
            config["xcpng_config"] = {
                "url": "https://xcpng.example.org",
                "username": "root",
                "template": "bioxen-guest",
                "ssh_user": "bioxen",
                "ssh_key_path": "~/.ssh/id_ed25519",
                "known_hosts_path": "~/.ssh/known_hosts",
            }
        elif vm_type not in VM_TYPES:
            raise InputError(f"unknown vm_type {vm_type!r}; choose one of: {', '.join(VM_TYPES)}")
        return VMConfig.model_validate(config).model_dump(exclude_none=True)

    def merge_configs(self, base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
        """Deep merge: nested dicts merge, everything else (lists too) is replaced by override."""
        for name, value in (("base", base), ("override", override)):
            if not isinstance(value, dict):
                raise InputError(f"config {name} must be a mapping, got {type(value).__name__}")
        merged = copy.deepcopy(base)
        for key, value in override.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = self.merge_configs(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
