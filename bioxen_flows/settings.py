"""Every ``BIOXEN_*`` setting in one place: defaults, a settings file per environment, the
environment itself (highest precedence). Modules read `get_settings()`, never ``os.environ``.

The settings file is ``settings.<BIOXEN_ENV>.yaml`` in ``BIOXEN_CONFIG_DIR`` when that is set
(a system-wide directory), else in ``BIOXEN_HOME``; it holds the same names without the
prefix and in lower case (``database_url: postgresql://...``). The three variables that locate
the file (``BIOXEN_HOME``, ``BIOXEN_ENV``, ``BIOXEN_CONFIG_DIR``) come from the environment only.
"""

from __future__ import annotations

import getpass
import os
import re
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bioxen_flows.errors import InputError

PREFIX = "BIOXEN_"
LOCATORS = ("home", "env", "config_dir")  # they say where the file is, so not in it
MAX_SETTINGS_FILE_BYTES = 64 * 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_NAME_PATTERN = f"^{_NAME.pattern}$"  # pydantic searches; anchored, it must match whole


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return f"uid{os.getuid()}"


def _percent(default: float, description: str) -> Any:
    """A threshold in percent (0-100)."""
    return Field(default, ge=0, le=100, description=description)


class Settings(BaseSettings):
    """BioXen Flows' settings (``BIOXEN_<NAME>`` in the environment)."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, extra="forbid", env_ignore_empty=True, validate_default=True
    )

    home: Path = Field(Path("~/.bioxen"),
                       description="state directory: the SQLite store, settings file, modules")
    env: str = Field("development", pattern=_NAME_PATTERN,
                     description="environment name: selects settings.<env>.yaml")
    config_dir: Path | None = Field(None, description="system-wide directory of settings files")
    database_url: str | None = Field(
        None, description="postgresql://USER@HOST:5432/DB for a shared store (default: SQLite "
                          "in home)")
    owner: str = Field(default_factory=os_user, pattern=_NAME_PATTERN,
                       description="user or project label VMs are created for (quotas, audit)")
    debug: bool = Field(False, description="show tracebacks instead of one-line errors")
    log_format: Literal["text", "json"] = Field("text", description="log line format")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="lowest level BioXen's own modules log (flow and task run "
                               "logs are Prefect's)")
    gc_min_age_seconds: float = Field(
        300.0, ge=0, description="gc never reaps a VM younger than this (it may be starting)")
    result_storage: str | None = Field(
        None, description="where Prefect keeps cached sweep-point results: a folder (default "
                          "<home>/prefect-results) or a saved storage block 'type/name', e.g. "
                          "s3-bucket/sweeps, for workers on several machines")
    model_cache: bool = Field(
        True, description="keep compiled models under <home>/model-cache (private, per host): "
                          "a later process loads one instead of compiling it again "
                          "(bench/engine.py measures it: builds in a fresh interpreter)")
    alert_low_atp_percent: float = _percent(
        20.0, "a VM whose atp_percent (energy saturation of elongation) falls below "
              "this raises the low-atp alert (event bioxen.vm.alert.low-atp)")
    alert_ribosomes_percent: float = _percent(
        90.0, "a VM holding more than this % of its ribosome allocation raises the "
              "ribosomes-near-cap alert (event bioxen.vm.alert.ribosomes-near-cap)")
    alert_burden_percent: float = _percent(
        20.0, "a comparison whose package costs more than this % of growth emits "
              "bioxen.run.burden-exceeded")
    vm_concurrency_limit: str = Field(
        "bioxen-vms", pattern=_NAME_PATTERN,
        description="Prefect global concurrency limit flows take one slot of per VM")

    @field_validator("home", "config_dir")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return None if value is None else expand_user(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _FileSource(settings_cls)

    @property
    def state_db(self) -> Path:
        return self.home / "state.db"

    def database(self) -> str:
        """The store's URL: ``database_url``, else the SQLite file in ``home``."""
        return self.database_url.strip() if self.database_url else f"sqlite:///{self.state_db}"


def expand_user(path: Path) -> Path:
    """``~`` and ``~user`` expanded; an unknown user is an `InputError` (a ValueError, which
    the settings report as one line) rather than Python's RuntimeError."""
    try:
        return path.expanduser()
    except RuntimeError:
        raise InputError(f"cannot expand {str(path)[:200]!r}: no such user's home; "
                         "give an absolute path") from None


def _environment() -> dict[str, str]:
    return {k.upper(): v for k, v in os.environ.items() if k.upper().startswith(PREFIX) and v}


def settings_file(environ: dict[str, str] | None = None) -> Path:
    """Where this environment's settings file is (it need not exist)."""
    environ = _environment() if environ is None else environ
    env = environ.get(f"{PREFIX}ENV", "development")
    if not _NAME.fullmatch(env):
        raise InputError(f"{PREFIX}ENV must be a name like 'production', got {env!r}")
    folder = environ.get(f"{PREFIX}CONFIG_DIR") or environ.get(f"{PREFIX}HOME", "~/.bioxen")
    try:
        return expand_user(Path(folder)) / f"settings.{env}.yaml"
    except ValueError as exc:
        variable = "CONFIG_DIR" if environ.get(f"{PREFIX}CONFIG_DIR") else "HOME"
        raise InputError(f"bad setting: {PREFIX}{variable}: {exc}") from None


def _read_file(path: Path) -> dict[str, Any]:
    """The settings file's mapping ({} when absent); bad files are one `InputError` line.
    A symbolic link to nothing (or a loop) is an error, not an absent file: the user
    meant a settings file to be there."""
    if path.is_symlink() and not path.exists():
        raise InputError(f"{path}: the settings file is a symbolic link to nothing (or a "
                         "loop); fix or remove it")
    if not path.exists():
        return {}
    from bioxen_flows.config.manager import parse_config_text
    from bioxen_flows.files import read_text_file

    data = parse_config_text(
        read_text_file(path, max_bytes=MAX_SETTINGS_FILE_BYTES, what="settings file"),
        "yaml", path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: a settings file is a mapping of name: value")
    unknown = sorted(str(k) for k in data if k not in Settings.model_fields or k in LOCATORS)
    if unknown:
        known = ", ".join(name for name in Settings.model_fields if name not in LOCATORS)
        raise InputError(f"{path}: unknown or environment-only setting(s): "
                         f"{', '.join(unknown)} (known: {known})")
    return data


class _FileSource(PydanticBaseSettingsSource):
    """The environment's settings file, below the environment in precedence."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self.data = _read_file(settings_file())

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


_cache: dict[tuple, Settings] = {}
_cache_lock = threading.Lock()


def get_settings() -> Settings:
    """The effective settings, re-read when the environment or the settings file changes."""
    environ = _environment()
    path = settings_file(environ)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        stamp = None
    key = (tuple(sorted(environ.items())), str(path), stamp)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{PREFIX}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise InputError(f"bad setting: {problems} (environment or {path})") from None
    if settings.database_url:  # masked wherever it is echoed (a driver's error, a log line)
        from bioxen_flows.redaction import register_secret, url_passwords

        for password in url_passwords(settings.database_url):
            register_secret(password)
    with _cache_lock:
        _cache.clear()
        _cache[key] = settings
    return settings


def describe() -> list[dict[str, Any]]:
    """Each setting's effective value and where it came from (default, file, environment);
    a database URL's password is masked."""
    settings = get_settings()
    environ = _environment()
    path = settings_file(environ)
    in_file = _read_file(path)
    rows = []
    for name, field in Settings.model_fields.items():
        variable = f"{PREFIX}{name.upper()}"
        if variable in environ:
            source = "environment"
        elif name in in_file:
            source = f"file {path}"
        else:
            source = "default"
        value = getattr(settings, name)
        if name == "database_url" and value:
            from bioxen_flows.redaction import mask_url

            value = mask_url(value)
        rows.append({
            "name": name, "variable": variable,
            "value": str(value) if isinstance(value, Path) else value,
            "source": source, "description": field.description or "",
        })
    return rows
