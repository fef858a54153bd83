"""Typed flow parameters, so the Prefect UI renders a form with choices instead of free text.

Prefect builds each flow's run form from the JSON schema of its signature: an `enum`
becomes a drop-down, a pydantic model a group of fields, and `Field(description=...)` (or the
docstring's Args) the help under each field. The names come from where the product defines
them (organisms/profiles.yaml, the built-in packages, the store's infrastructures), never
repeated here.

An optional parameter (`int | None = None`) would show as a choice between the type and
"None" ("Property is type None"); these aliases describe it as the type alone, left empty
for the default. Descriptions come from each flow's docstring (Args).
"""

from __future__ import annotations

from typing import Annotated, Any, get_args

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from bioxen_flows.config.models import SimulationConfig
from bioxen_flows.model.guest import BUILTIN_PACKAGES
from bioxen_flows.organisms.profiles import get_supported_biological_types
from bioxen_flows.vm_types import VM_TYPES

ORGANISMS = tuple(get_supported_biological_types())
INFRASTRUCTURES = tuple(VM_TYPES)
PACKAGES = tuple(sorted(BUILTIN_PACKAGES))
STOCHASTIC_ENGINES = get_args(SimulationConfig.model_fields["stochastic_engine"].annotation)


def shown_as(schema: dict[str, Any]) -> WithJsonSchema:
    """Show a parameter in the form as `schema`. The value is still checked by the flow
    itself, whose errors name the choices (Prefect's own would be a pydantic dump)."""
    return WithJsonSchema(schema)


def _choice(names: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "string", "enum": list(names)}


Organism = Annotated[str, shown_as(_choice(ORGANISMS))]
Infrastructure = Annotated[str, shown_as(_choice(INFRASTRUCTURES))]
# optional parameters: one input, empty for the default (no "None" branch)
Organisms = Annotated[list[str] | None,
                      shown_as({"type": "array", "items": _choice(ORGANISMS),
                                "uniqueItems": True})]
_PACKAGE_SCHEMA = {"anyOf": [
    {"title": "built-in package", **_choice(PACKAGES)},
    {"title": "module file (.ant, .sbml, .xml) on the worker", "type": "string"},
]}
Package = Annotated[str | None, shown_as(_PACKAGE_SCHEMA)]
PackageName = Annotated[str, shown_as(_PACKAGE_SCHEMA)]
OrganismList = Annotated[list[str], shown_as({"type": "array", "items": _choice(ORGANISMS),
                                              "uniqueItems": True})]
Numbers = Annotated[list[float] | None, shown_as({"type": "array", "items": {"type": "number"}})]
Counts = Annotated[list[int] | None, shown_as({"type": "array", "items": {"type": "integer"}})]
OptionalInt = Annotated[int | None, shown_as({"type": "integer"})]
Percent = Annotated[float | None, shown_as({"type": "number", "minimum": 0, "maximum": 100})]
OptionalText = Annotated[str | None, shown_as({"type": "string"})]
StochasticEngine = Annotated[str, shown_as(_choice(STOCHASTIC_ENGINES))]
Mapping = Annotated[dict[str, Any] | None, shown_as({"type": "object"})]


class XCPngPool(BaseModel):
    """An XCP-ng pool to provision guests on, its credentials by block name (an
    `XCPngCredentials` block saved on the Prefect server: url, username, password), so no
    secret is ever a flow parameter."""

    model_config = ConfigDict(extra="forbid")

    credentials_block: str = Field(
        min_length=1, description="name of the saved XCPngCredentials block (url, user, "
                                  "password of the pool)")
    template: str = Field(min_length=1, description="the guest template to clone "
                                                    "(bioxen installed, see docs/xcpng.md)")
    ssh_user: str = Field(min_length=1, description="user the guest is driven as over SSH")
    ssh_key_path: str = Field(min_length=1, description="private key file on the worker")
    ssh_host_key: str = Field(
        "", description="the guest's host key ('ssh-ed25519 AAAA...') or its "
                        "'SHA256:...' fingerprint; empty: use known_hosts_path")
    known_hosts_path: str = Field("", description="known_hosts file that verifies the guest "
                                                  "(when ssh_host_key is empty)")
    ssh_port: int = Field(22, ge=1, le=65535, description="the guest's SSH port")
    boot_timeout_seconds: float = Field(300.0, gt=0,
                                        description="longest wait for the guest's IP address")

    def xcpng_config(self) -> dict[str, Any]:
        """As the VM config's `xcpng_config` mapping (empty fields left out)."""
        return {k: v for k, v in self.model_dump().items() if v != ""}


Pool = Annotated[XCPngPool | None, shown_as(XCPngPool.model_json_schema())]


def with_pool(config: dict[str, Any] | None, pool: XCPngPool | dict[str, Any] | None
              ) -> dict[str, Any] | None:
    """`config` with the pool as its `xcpng_config` (a pool given both ways: the parameter)."""
    if pool is None:
        return config
    if isinstance(pool, dict):
        pool = XCPngPool.model_validate(pool)
    return {**(config or {}), "xcpng_config": pool.xcpng_config()}
