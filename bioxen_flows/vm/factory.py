"""Create, load and list bio-VMs (the seeds' factory pattern).

All validation happens before anything is created, so a bad call leaves no VM, no
record and no allocation behind. A creation is made in two writes: a "creating" record
that reserves the id and the budget (leased to its creator), then, once the cell has its
packages and caps, one write that makes it "created" with its state and audit entry. A
creator killed in between leaves a "creating" record that can never be used and that gc
reaps (`StateStore.interrupted_creations`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from bioxen_flows.errors import BioXenError, InputError
from bioxen_flows.limits import VM_ID
from bioxen_flows.organisms.profiles import get_supported_biological_types
from bioxen_flows.settings import get_settings
from bioxen_flows.state import StateStore, VMRecord, check_owner, new_lease_holder, readable
from bioxen_flows.vm.base import BiologicalVM, check_allocation
from bioxen_flows.vm.infrastructures import infrastructure, infrastructure_names
from bioxen_flows.xcpng.placement import Placement

log = logging.getLogger(__name__)


def get_supported_vm_types() -> list[str]:
    return list(infrastructure_names())


def create_bio_vm(
    vm_id: str,
    biological_type: str,
    vm_type: str = "basic",
    config: dict[str, Any] | None = None,
    *,
    store: StateStore | None = None,
    placement: Placement | Mapping[str, str] | None = None,
    owner: str | None = None,
) -> BiologicalVM:
    """Create a VM in state `created`; its cell starts in balanced growth.

    The VM counts against ``owner``'s quota (default: the ``owner`` setting).
    `placement` (XCP-ng: a guest a flow has already provisioned) comes from the backend,
    never from a config: a config carrying one is refused.
    """
    from bioxen_flows.config import ConfigManager

    if not isinstance(vm_id, str) or not VM_ID.fullmatch(vm_id):
        raise InputError(f"invalid vm_id {vm_id!r}: use 1-64 characters from A-Z a-z 0-9 _ . -")
    if biological_type not in get_supported_biological_types():
        raise InputError(
            f"unknown biological_type {biological_type!r}; "
            f"choose one of: {', '.join(get_supported_biological_types())}"
        )
    kind = infrastructure(vm_type)
    placement = None if placement is None else Placement.from_record(placement)
    manager = ConfigManager()
    config = manager.merge_configs(
        manager.load_defaults(biological_type), {} if config is None else config
    ) if config is None else _checked_user_config(manager, config, biological_type, vm_type)
    config = {**config, "biological_type": biological_type, "vm_type": vm_type}
    ok, errors = manager.validate_config(config, vm_type, biological_type)
    if not ok:
        raise InputError("invalid config: " + "; ".join(errors))
    resources = config.get("resources") or {}
    allocations = {
        key: resources[key] for key in ("atp_percent", "ribosomes")
        if resources.get(key) is not None
    }
    check_allocation(allocations.get("atp_percent"), allocations.get("ribosomes"))
    store = store or StateStore()
    now = time.time()
    record = VMRecord(
        vm_id=vm_id,
        biological_type=biological_type,
        vm_type=vm_type,
        state="creating",
        created_at=now,
        config=config,
        allocations=allocations,
        snapshot=None,
        updated_at=now,
        owner=check_owner(get_settings().owner if owner is None else owner),  # "" is refused
    )
    lease = new_lease_holder()
    # the primary key makes duplicate ids fail atomically; the budget and quota are checked
    # in the same transaction; the creator holds the lease until the VM is complete, and
    # the record says "creating" until then
    detail = {"biological_type": biological_type, "vm_type": vm_type, "owner": record.owner,
              **({"allocations": allocations} if allocations else {})}
    record = store.insert_vm(record, lease=lease, detail=detail, audit_create=False)
    cloning: list[bool] = []  # set once the pool may hold a clone of this VM
    try:
        if kind.provisioned:
            from bioxen_flows.vm.guest import provision_guest

            record = provision_guest(record, store, lease, placement,
                                     before_clone=lambda: cloning.append(True))
        vm = BiologicalVM(record, store)
        vm.complete_creation(lease, detail)
    except BaseException as exc:
        # a guest the caller provisioned (placement) is the caller's to tear down: a
        # retry reuses it, so it must still exist (the flow's teardown reaps it in the end);
        # a failure before the clone (no password, the pool unreachable) left nothing there
        _forget(vm_id, store, audit=False, release_remote=placement is None and bool(cloning))
        refused = isinstance(exc, (BioXenError, ValueError))
        store.audit(vm_id, "create", {**detail, "error": str(exc)[:500]},
                    outcome="refused" if refused else "failed")
        raise
    return vm


def _checked_user_config(
    manager: Any, config: Any, biological_type: str, vm_type: str
) -> dict[str, Any]:
    """The user's config over the defaults; it may not name another organism or vm_type."""
    merged = manager.merge_configs(manager.load_defaults(biological_type), config)
    for key, wanted in (("biological_type", biological_type), ("vm_type", vm_type)):
        if key in config and config[key] != wanted:
            raise InputError(f"invalid config: {key}: config says {config[key]!r} "
                             f"but {wanted!r} was requested")
    return merged


def load_bio_vm(vm_id: str, *, store: StateStore | None = None) -> BiologicalVM:
    """A VM created by this or another process, with its cell state restored."""
    store = store or StateStore()
    return BiologicalVM(readable(store.get_vm(vm_id)), store)


def list_bio_vms(*, store: StateStore | None = None) -> list[dict[str, Any]]:
    """Every VM in the state store, without building their cells."""
    now = time.time()
    rows = []
    for r in (store or StateStore()).list_vms():
        uptime = r.uptime_seconds + (now - r.running_since if r.running_since else 0.0)
        snapshot = r.snapshot or {}
        rows.append({
            "vm_id": r.vm_id,
            "biological_type": r.biological_type,
            "vm_type": r.vm_type,
            "state": r.state,
            "uptime_seconds": uptime,
            "simulated_time_min": snapshot.get("time", 0.0) if isinstance(snapshot, dict) else 0,
            "allocations": r.allocations,
            "labels": r.config.get("labels") or {},
            "created_at": r.created_at,
            "damaged": r.damaged,
        })
    return rows


def destroy_labelled_vms(
    key: str, value: str, *, store: StateStore | None = None
) -> list[str]:
    """Destroy every VM whose config labels have key=value (e.g. all VMs of one flow run)."""
    store = store or StateStore()
    destroyed = []
    for record in store.list_vms():
        if (record.config.get("labels") or {}).get(key) != value:
            continue
        try:
            BiologicalVM(record, store).destroy()
        except Exception:  # a VM that cannot be rebuilt must still not leak
            _forget(record.vm_id, store, reason="unbuildable")
        destroyed.append(record.vm_id)
    return destroyed


def force_destroy_vm(vm_id: str, *, store: StateStore | None = None) -> bool:
    """Remove a VM's record whatever its state (damaged, busy, unbuildable); best effort on
    its cell or XCP-ng VM. Returns False when there was no such VM."""
    store = store or StateStore()
    if store.find_vm(vm_id) is None:
        return False
    _forget(vm_id, store, reason="forced")
    return True


def _forget(
    vm_id: str, store: StateStore, *, reason: str = "", audit: bool = True,
    release_remote: bool = True,
) -> None:
    """Remove every trace of a VM whose creation failed (a guest's VM found on its pool by
    its tag, unless `release_remote` is False: then that VM is not ours to remove)."""
    from bioxen_flows.vm.local import forget_cell

    record = store.find_vm(vm_id)
    try:
        if release_remote and record is not None and not record.damaged:
            infrastructure(record.vm_type).reap(record)
    except Exception as exc:  # e.g. the pool refuses us: its tags still let the reaper find it
        log.warning("could not look for the XCP-ng VM of %s on the pool now (%s); "
                    "`bioxen xcpng gc --config CONFIG --yes` finds it by its tag and "
                    "destroys it", vm_id, exc)
    finally:
        if record is not None:
            forget_cell(store.url, vm_id, record.created_at)
        store.delete_vm(vm_id, force=True, action="destroy" if audit else None,
                        detail={"reason": reason})
