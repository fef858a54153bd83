"""XCP-ng provisioning steps as Prefect tasks: transient XAPI faults retry, others fail at once.

Each task opens its own XAPI session (sessions are per task, never shared) and
receives only the pool's config: the password is looked up inside the task.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bioxen_flows.orchestration import retry
from bioxen_flows.orchestration.run_context import flow_run_is_live
from bioxen_flows.orchestration.tasks import SETUP_TIMEOUT_S
from bioxen_flows.xcpng import backend

# Every step changes the pool: never cached; bounded, so a hung XAPI call fails the run.
RETRIES = {**retry.XCPNG_STEP.task_options(), "cache_policy": NO_CACHE,
           "timeout_seconds": SETUP_TIMEOUT_S}


@task(name="xcpng-clone-template", **RETRIES)
def clone_xcpng_vm(cfg: dict[str, Any], vm_id: str, owner: str) -> str:
    vm = backend.clone_and_tag(cfg, vm_id, owner)
    get_run_logger().info("cloned template %r for %s", cfg["template"], vm_id)
    return vm


@task(name="xcpng-provision-disks", **RETRIES)
def provision_xcpng_disks(cfg: dict[str, Any], vm: str) -> str:
    backend.provision(cfg, vm)
    return vm


@task(name="xcpng-boot-and-wait-for-ip", **RETRIES)
def boot_xcpng_vm(cfg: dict[str, Any], vm: str) -> backend.Placement:
    placement = backend.boot(cfg, vm)
    get_run_logger().info("guest is up at %s", placement.ip)
    return placement


@task(name="xcpng-reap-vms", **RETRIES)
def reap_xcpng_vms(cfg: dict[str, Any], owner: str | None = None) -> list[str]:
    """Destroy this installation's VMs and disks of `owner` (a flow run: at once), or,
    without owner, those whose owner is gone and that are older than the minimum age."""
    if owner:
        reaped = backend.reap_vms(cfg, keep=lambda tags: tags.get("owner") != owner)
    else:
        leftovers = plan_gc(cfg, backend.gc_min_age_seconds())
        reaped = backend.destroy_leftovers(cfg, leftovers)
    get_run_logger().info("reaped %d XCP-ng object(s): %s", len(reaped), ", ".join(reaped))
    return reaped


def plan_gc(cfg: dict[str, Any], min_age_seconds: float) -> list[backend.Leftover]:
    """What `bioxen xcpng gc` would destroy, and what it keeps, each with the reason:
    only this installation's, only when their owner is gone (no bio-VM record in this
    state store, no live Prefect flow run) and only when older than `min_age_seconds`.
    An XCP-ng bio-VM whose creation was interrupted (its creator is gone) goes at any
    age: its record and everything of it on this pool."""
    interrupted = _interrupted_on_pool(cfg)
    why = "its bio-VM's creation was interrupted (its creator is gone)"

    def doomed(tags: dict[str, str]) -> str | None:
        return why if tags.get("vm_id") in interrupted else None

    found = backend.find_leftovers(cfg, _owner_is_alive, min_age_seconds, doomed)
    return found + [backend.Leftover(kind=backend.RECORD, ref=vm_id, name=vm_id, vm_id=vm_id,
                                     owner="", age_seconds=None, reason=why, destroy=True)
                    for vm_id in sorted(interrupted)]


def _interrupted_on_pool(cfg: dict[str, Any]) -> set[str]:
    """Ids of XCP-ng bio-VMs on this pool (same XAPI URL) whose creation was interrupted."""
    from bioxen_flows.state import StateStore

    return {r.vm_id for r in StateStore().interrupted_creations()
            if r.vm_type == "xcpng"
            and (r.config.get("xcpng_config") or {}).get("url") == cfg.get("url")}


def _owner_is_alive(tags: dict[str, str]) -> str | None:
    """Why a tagged thing must stay (its owner lives), or None."""
    from bioxen_flows.state import StateStore

    vm_id = tags.get("vm_id", "")
    record = StateStore().find_vm(vm_id) if vm_id else None
    if record is not None and record.vm_type == "xcpng":
        return f"bio-VM {vm_id} exists in this installation's store"
    if flow_run_is_live(tags.get("owner", "")):
        return f"flow run {tags['owner']} is still running"
    return None

