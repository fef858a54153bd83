"""The infrastructures a bio-VM runs on: one registry, asked instead of `vm_type == "..."`.

Each entry names the host that holds the VM's cell (`vm.host.CellHost`) and the facts
callers decide on: whether the cell runs in this process, whether a guest must be
provisioned (and its placement recorded) first, which config section carries its
credentials, and whether its calls wait on the network. The names themselves live in
`bioxen_flows.vm_types`, below the layers that check them; this registry covers exactly
those.
"""

from __future__ import annotations

from dataclasses import dataclass

from bioxen_flows.errors import InputError
from bioxen_flows.state import StateStore, VMRecord
from bioxen_flows.vm.host import CellHost, CurrentRecord, HostFactory
from bioxen_flows.vm_types import VM_TYPES


@dataclass(frozen=True)
class Infrastructure:
    """What one infrastructure is and needs."""

    name: str
    description: str
    host: HostFactory
    in_process: bool  # the cell runs here; the record carries its state (a snapshot)
    provisioned: bool  # a guest is provisioned (and its placement recorded) before the cell
    config_section: str | None  # the config section naming its pool and credentials
    io_bound: bool  # its calls wait on the network: run them on threads, not processes

    def reap(self, record: VMRecord) -> None:
        """Destroy what a VM of this kind may have left outside the store, found by its
        tag (a creation that failed or was interrupted); nothing for an in-process cell."""
        if self.provisioned:
            from bioxen_flows.vm.guest import reap_guest

            reap_guest(record)


def _local_host(current: CurrentRecord, store: StateStore) -> CellHost:
    from bioxen_flows.vm.local import LocalHost

    return LocalHost(current, store)


def _guest_host(current: CurrentRecord, store: StateStore) -> CellHost:
    from bioxen_flows.vm.guest import GuestHost

    return GuestHost(current, store)


INFRASTRUCTURES: dict[str, Infrastructure] = {
    "basic": Infrastructure(
        name="basic", description="the embedded hypervisor, in this process",
        host=_local_host, in_process=True, provisioned=False, config_section=None,
        io_bound=False),
    "xcpng": Infrastructure(
        name="xcpng", description="a VM on an XCP-ng pool",
        host=_guest_host, in_process=False, provisioned=True, config_section="xcpng_config",
        io_bound=True),
}
assert tuple(INFRASTRUCTURES) == VM_TYPES, "the registry and vm_types.VM_TYPES disagree"


def infrastructure_names() -> tuple[str, ...]:
    """Every vm_type, in the order menus and help list them."""
    return VM_TYPES


def infrastructure(vm_type: str) -> Infrastructure:
    """The infrastructure named `vm_type`; an unknown name is an `InputError`."""
    try:
        return INFRASTRUCTURES[vm_type]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown vm_type {vm_type!r}; choose one of: {', '.join(VM_TYPES)}") from None
