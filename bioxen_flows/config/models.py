"""The configuration schema; strict so that typos and wrong types fail loudly, not silently."""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bioxen_flows.errors import InputError
from bioxen_flows.limits import MAX_NUTRIENT, MAX_SEED
from bioxen_flows.organisms.profiles import get_profile
from bioxen_flows.vm_types import VM_TYPES

_STRICT = ConfigDict(extra="forbid", strict=True)
_NON_EMPTY = Field(min_length=1)
_HOST_KEY = re.compile(
    r"(?:ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)) AAAA[A-Za-z0-9+/]+={0,3}"
    r"|SHA256:[A-Za-z0-9+/]{43}=?"
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_PACKAGES = 20  # packages a config may install at creation
MAX_LABELS = 50



def _refuse_key(data: Any, key: str, message: str) -> Any:
    """A "before" validator's body: refuse a mapping that carries ``key``."""
    if isinstance(data, dict) and key in data:
        raise InputError(message)
    return data

class ResourceConfig(BaseModel):
    """Caps handed to the hypervisor; None means uncapped."""

    model_config = _STRICT
    atp_percent: float | None = Field(default=None, gt=0, le=100)
    ribosomes: int | None = Field(default=None, ge=1)


class SimulationConfig(BaseModel):
    """How the cell model is run; stochastic runs must be reproducible, hence the seed."""

    model_config = _STRICT
    stochastic: bool = False
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)  # a 64-bit Gillespie seed
    nutrient: float | None = Field(default=None, ge=0, le=MAX_NUTRIENT)  # molecules per cell
    # compiled: the exact engine generated from the model (default); roadrunner: the
    # reference, libroadrunner's Gillespie, on a cell of fixed size
    stochastic_engine: Literal["compiled", "roadrunner"] = "compiled"
    division: bool | None = None  # a stochastic cell grows and divides (default: compiled)

    @model_validator(mode="after")
    def _seed_when_stochastic(self) -> SimulationConfig:
        if self.stochastic and self.seed is None:
            raise InputError("seed is required when stochastic is true (runs must be reproducible)")
        if self.division and self.stochastic_engine != "compiled":
            raise InputError("only the compiled stochastic engine simulates division")
        return self


class XCPngConfig(BaseModel):
    """Where and how to provision a guest; the password is looked up at run time, never stored.

    The pool is reached either through a saved `XCPngCredentials` block (`credentials_block`:
    its url, username, password and TLS settings) or through `url` + `username` here with
    the password from `password_env` or a Prefect Secret block."""

    model_config = _STRICT
    url: str | None = None
    username: str | None = Field(default=None, min_length=1)
    credentials_block: str | None = Field(default=None, min_length=1)
    password_env: str = "XCPNG_PASSWORD"
    password_secret_block: str | None = None
    template: str = _NON_EMPTY
    ca_file: str | None = None
    ignore_ssl: bool = False
    ssh_user: str = _NON_EMPTY
    ssh_key_path: str = _NON_EMPTY
    ssh_host_key: str | None = None
    known_hosts_path: str | None = None
    ssh_port: int = Field(default=22, ge=1, le=65535)
    boot_timeout_seconds: float = Field(default=300.0, gt=0)
    # how long one XAPI task (clone, provision, start, shutdown) may take before it is cancelled
    task_timeout_seconds: float = Field(default=600.0, gt=0, le=86_400)
    # how long one guest request may run; the guest abandons it (uncommitted) at this deadline
    ssh_command_timeout_seconds: float = Field(default=600.0, gt=0, le=86_400)

    @model_validator(mode="before")
    @classmethod
    def _no_password(cls, data: Any) -> Any:
        return _refuse_key(
            data, "password",
            "password must not be stored in the config; set an environment variable "
            "(password_env) or a Prefect Secret block (password_secret_block)",
        )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise InputError(f"must be an http(s) URL with a host, got {value!r}")
        return value

    @field_validator("password_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value):
            raise InputError(f"must be an environment variable name, got {value!r}")
        return value

    @field_validator("ssh_host_key")
    @classmethod
    def _host_key_form(cls, value: str | None) -> str | None:
        if value is not None and not _HOST_KEY.fullmatch(value.strip()):
            raise InputError("must be '<key-type> AAAA<base64>' or a 'SHA256:<base64>' fingerprint")
        return value

    @model_validator(mode="after")
    def _pool_named(self) -> XCPngConfig:
        if self.credentials_block is None and (self.url is None or self.username is None):
            raise InputError("url and username are required (or name an XCPngCredentials "
                             "block in credentials_block)")
        if self.credentials_block is not None and (self.url or self.username):
            raise InputError("give either credentials_block or url + username, not both")
        return self

    @model_validator(mode="after")
    def _host_key_verified(self) -> XCPngConfig:
        if self.ssh_host_key is None and self.known_hosts_path is None:
            raise InputError(
                "ssh_host_key or known_hosts_path is required (SSH host keys must be verified)"
            )
        return self


class GenomeConfig(BaseModel):
    """Annotation attached to a VM; essentiality only from a table the user supplies."""

    model_config = _STRICT
    genbank_file: str = Field(min_length=1)
    essentiality_file: str | None = None


class VMConfig(BaseModel):
    """One bio-VM: organism, backend, resource caps, simulation mode and packages."""

    model_config = _STRICT
    biological_type: str | None = None
    vm_type: Literal[VM_TYPES] = "basic"  # type: ignore[valid-type] (the names, once)
    resources: ResourceConfig = Field(default_factory=ResourceConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    packages: list[str] = Field(default_factory=list, max_length=MAX_PACKAGES)
    xcpng_config: XCPngConfig | None = None
    genome: GenomeConfig | None = None
    # free-form tags, e.g. the Prefect flow run that owns the VM (so teardown can find it)
    labels: dict[str, str] = Field(default_factory=dict, max_length=MAX_LABELS)

    @model_validator(mode="before")
    @classmethod
    def _no_placement(cls, data: Any) -> Any:
        # Where a VM runs (XCP-ng: its uuid and guest IP) is the backend's to record once it
        # has provisioned the VM; a config naming it could make teardown destroy another VM.
        return _refuse_key(
            data, "placement",
            "placement is set by the backend when it provisions the VM; a config may not carry it",
        )

    @field_validator("packages")
    @classmethod
    def _package_names(cls, value: list[str]) -> list[str]:
        for item in value:
            if not 0 < len(item) <= 4096:
                raise InputError("each package is a name or path of 1-4096 characters")
        return value

    @field_validator("labels")
    @classmethod
    def _label_sizes(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if not 0 < len(key) <= 256 or len(item) > 1024:
                raise InputError("label keys are 1-256 characters, values at most 1024")
        return value

    @field_validator("biological_type")
    @classmethod
    def _known_organism(cls, value: str | None) -> str | None:
        if value is not None:
            get_profile(value)  # ValueError naming the valid choices
        return value
