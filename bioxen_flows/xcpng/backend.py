"""XCP-ng provisioning and teardown for bio-VMs, on top of the XAPI client.

One session per call (sessions are not shared across threads or tasks). The steps
tag the VM right after cloning, so a failure at any later step still leaves a VM
that `reap_vms` (and a flow's teardown) can find.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import XenAPI

from bioxen_flows.errors import InfrastructureError
from bioxen_flows.xcpng import xapi

log = logging.getLogger(__name__)


def xapi_password(cfg: dict[str, Any]) -> str:
    """The XAPI password from a Prefect Secret block or the environment; never from config."""
    block = cfg.get("password_secret_block")
    if block:
        from prefect.blocks.system import Secret

        return str(Secret.load(block).get())
    name = cfg.get("password_env") or "XCPNG_PASSWORD"
    password = os.environ.get(name)
    if not password:
        raise ValueError(
            f"no XCP-ng password: set the environment variable {name} "
            "or name a Prefect Secret block in xcpng_config.password_secret_block"
        )
    return password


def endpoint(cfg: dict[str, Any]) -> xapi.XapiEndpoint:
    return xapi.XapiEndpoint(
        url=cfg["url"], username=cfg["username"], ca_file=cfg.get("ca_file"),
        ignore_ssl=bool(cfg.get("ignore_ssl", False)),
    )


def session(cfg: dict[str, Any]):  # -> contextmanager yielding the xenapi proxy
    return xapi.xapi_session(endpoint(cfg), xapi_password(cfg))


def clone_and_tag(cfg: dict[str, Any], vm_id: str, owner: str) -> str:
    """Template → clone → tags; returns the new VM's ref."""
    with session(cfg) as x:
        template = xapi.find_template(x, cfg["template"])
        vm = xapi.clone_template(x, template, f"bioxen-{vm_id}")
        xapi.describe_and_tag(x, vm, vm_id, owner, f"BioXen bio-VM {vm_id}",
                              installation_id())
        return vm


def provision(cfg: dict[str, Any], vm: str) -> None:
    with session(cfg) as x:
        xapi.fix_disks_sr(x, vm)
        xapi.provision_disks(x, vm)


def boot(cfg: dict[str, Any], vm: str) -> dict[str, str]:
    """Start the VM and wait for its guest IP; returns the placement to record."""
    with session(cfg) as x:
        marker = xapi.start_vm(x, vm)
        ip = xapi.wait_for_ip(x, vm, marker, timeout=float(cfg.get("boot_timeout_seconds", 300)))
        with xapi.xapi_errors("reading the VM's uuid"):
            uuid = x.VM.get_uuid(vm)
    return {"vm_ref": vm, "vm_uuid": uuid, "ip": ip}


def provision_vm(cfg: dict[str, Any], vm_id: str, owner: str) -> dict[str, str]:
    """All provisioning steps in order (the Prefect flow runs them as separate tasks)."""
    started = time.monotonic()
    vm = clone_and_tag(cfg, vm_id, owner)
    provision(cfg, vm)
    placement = boot(cfg, vm)
    log.info("provisioned XCP-ng VM for %s at %s in %.1fs", vm_id, placement["ip"],
             time.monotonic() - started)
    return placement


def installation_id() -> str:
    from bioxen_flows.state import StateStore

    return StateStore().installation_id()


def destroy_vm(cfg: dict[str, Any], vm_uuid: str, vm_id: str) -> list[str]:
    """Tear a VM down by uuid; a VM that is already gone is not an error. A VM that does not
    carry this installation's BioXen tag for `vm_id` (a template, another installation's VM,
    anything a record was made to point at) is refused and left untouched."""
    with session(cfg) as x:
        try:
            vm = x.VM.get_by_uuid(vm_uuid)
        except XenAPI.Failure as exc:  # UUID_INVALID: already destroyed
            log.info("XCP-ng VM %s already gone: %s", vm_uuid, exc)
            return []
        tags = xapi.tags_of(x, vm)
        if tags.get("installation") != installation_id() or tags.get("vm_id") != vm_id:
            raise InfrastructureError(
                f"refusing to destroy XCP-ng VM {vm_uuid}: it does not carry this "
                f"installation's BioXen tag for {vm_id!r}"
            )
        return xapi.teardown_vm(x, vm)


def reap_vms(cfg: dict[str, Any], keep: Callable[[dict[str, str]], bool]) -> list[str]:
    """Destroy every VM tagged by this package for which `keep(tags)` is False."""
    reaped = []
    with session(cfg) as x:
        for vm, tags in xapi.find_tagged_vms(x).items():
            if not keep(tags):
                xapi.teardown_vm(x, vm)
                reaped.append(tags.get("vm_id", vm))
    return reaped
