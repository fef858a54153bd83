"""Where an XCP-ng bio-VM's guest runs: what provisioning found, recorded with the VM.

The backend returns it once the guest has booted; the VM record keeps it (as a mapping in
its config, the store's JSON) so a later process reaches the same guest and tears the same
XCP-ng VM down. A record whose provisioning never finished may hold only part of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from bioxen_flows.errors import InputError


@dataclass(frozen=True)
class Placement:
    """The guest's XCP-ng VM (ref, uuid) and the address its SSH server answers on."""

    vm_ref: str | None = None
    vm_uuid: str | None = None
    ip: str | None = None

    def as_dict(self) -> dict[str, str]:
        """The recorded form: only the fields that are known."""
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_record(cls, data: Placement | Mapping[str, Any] | None) -> Placement:
        """The placement a record (or a caller) holds; none at all is an empty one."""
        if data is None or isinstance(data, Placement):
            return data or cls()
        if not isinstance(data, Mapping):
            raise InputError(f"a placement is a mapping, got {type(data).__name__}")
        unknown = set(data) - {"vm_ref", "vm_uuid", "ip"}
        if unknown:
            raise InputError(f"unknown placement field(s): {', '.join(sorted(unknown))}")
        for key, value in data.items():
            if value is not None and not isinstance(value, str):
                raise InputError(f"placement {key} must be a string, got {value!r}")
        return cls(**dict(data))
