"""A small XAPI client on the official XenAPI package: sessions, waits, provisioning, teardown.

Every call goes through XML-RPC exactly as xapi expects it. Failures are sorted at
the edge: transient ones (a busy object, a VM still booting, a lost connection)
become `TransientInfrastructureError` so Prefect retries them; everything else
becomes `XapiError`, a ValueError whose message tells the user what to fix.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import ssl
import time
import xml.etree.ElementTree as ET
import xmlrpc.client
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import XenAPI

from bioxen_flows.errors import TransientInfrastructureError

log = logging.getLogger(__name__)

NULL_REF = "OpaqueRef:NULL"
TAG_PREFIX = "bioxen_"
TRANSIENT_CODES = frozenset({
    "OTHER_OPERATION_IN_PROGRESS", "VM_BAD_POWER_STATE", "TOO_BUSY", "HOST_OFFLINE",
    "VM_IS_BEING_BOOTED", "SR_BACKEND_FAILURE_44", "CANNOT_CONTACT_HOST",
})
ADVICE = {
    "SESSION_AUTHENTICATION_FAILED": "check xcpng_config.username and the password "
    "(environment variable named by password_env, or the Prefect Secret block)",
    "SR_FULL": "the storage repository is full: free space or choose another SR",
    "VM_REQUIRES_SR": "the template's disks point at a storage repository this pool lacks",
    "UUID_INVALID": "an object the template refers to does not exist in this pool",
    "HANDLE_INVALID": "the XAPI object no longer exists",
    "PERMISSION_DENIED": "the XCP-ng user lacks the role for this operation",
}


class XapiError(ValueError):
    """A permanent XAPI failure: retrying will not help; the message says what to fix."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


def classify(failure: XenAPI.Failure, doing: str) -> Exception:
    """The exception a caller should see for an XAPI failure while `doing` something."""
    details = [str(d) for d in failure.details]
    code = details[0] if details else "UNKNOWN"
    if code in TRANSIENT_CODES:
        return TransientInfrastructureError(f"XAPI {code} while {doing}: {details[1:]}")
    advice = ADVICE.get(code, "see the XAPI error code in the XCP-ng documentation")
    return XapiError(f"XAPI {code} while {doing}: {advice} (details: {details[1:]})", code)


@dataclass(frozen=True)
class XapiEndpoint:
    """Where and how to reach the pool; the password is passed separately, never stored."""

    url: str
    username: str
    ca_file: str | None = None
    ignore_ssl: bool = False
    timeout_seconds: float = 30.0


class _TimeoutTransport(xmlrpc.client.Transport):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host):  # noqa: ANN001, ANN201 (xmlrpc signature)
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


class _TimeoutSafeTransport(xmlrpc.client.SafeTransport):
    def __init__(self, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self._timeout = timeout

    def make_connection(self, host):  # noqa: ANN001, ANN201 (xmlrpc signature)
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


def _session(endpoint: XapiEndpoint, url: str) -> XenAPI.Session:
    if urlparse(url).scheme == "https":
        if endpoint.ignore_ssl:  # only when the user asked for it in config
            return XenAPI.Session(url, ignore_ssl=True)
        context = ssl.create_default_context(cafile=endpoint.ca_file)
        return XenAPI.Session(url, transport=_TimeoutSafeTransport(endpoint.timeout_seconds,
                                                                    context))
    return XenAPI.Session(url, transport=_TimeoutTransport(endpoint.timeout_seconds))


@contextmanager
def xapi_session(endpoint: XapiEndpoint, password: str) -> Iterator[Any]:
    """A logged-in session (following a slave's redirect to the master); logout always."""
    url = endpoint.url
    for _ in range(3):
        session = _session(endpoint, url)
        try:
            session.xenapi.login_with_password(endpoint.username, password, "2.15", "bioxen")
            break
        except XenAPI.Failure as failure:
            if failure.details and failure.details[0] == "HOST_IS_SLAVE":
                url = f"{urlparse(url).scheme}://{failure.details[1]}"
                log.info("XAPI host is a pool member; logging in on the master %s", url)
                continue
            raise classify(failure, f"logging in to {endpoint.url}") from None
        except OSError as exc:
            raise TransientInfrastructureError(f"cannot reach XAPI at {url}: {exc}") from exc
    else:
        raise XapiError(f"too many HOST_IS_SLAVE redirects starting at {endpoint.url}")
    try:
        yield session.xenapi
    finally:
        try:
            session.xenapi.session.logout()
        except (XenAPI.Failure, OSError) as exc:
            log.warning("XAPI logout failed: %s", exc)


@contextmanager
def xapi_errors(doing: str) -> Iterator[None]:
    """Translate XenAPI failures and socket errors raised while `doing` something."""
    try:
        yield
    except XenAPI.Failure as failure:
        raise classify(failure, doing) from None
    except (OSError, xmlrpc.client.ProtocolError) as exc:
        raise TransientInfrastructureError(f"XAPI connection lost while {doing}: {exc}") from exc


def wait_for_task(x: Any, task: str, doing: str, timeout: float = 600.0) -> str:
    """Poll an async XAPI task to completion; the task object is always destroyed."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    try:
        while (status := x.task.get_status(task)) == "pending":
            if time.monotonic() > deadline:
                raise TransientInfrastructureError(f"XAPI task timed out after {timeout}s: {doing}")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        if status == "success":
            result = x.task.get_result(task)
            match = re.search(r"<value>(.*)</value>", result or "")
            return match.group(1) if match else result or ""
        raise classify(XenAPI.Failure(x.task.get_error_info(task)), doing)
    finally:
        try:
            x.task.destroy(task)
        except XenAPI.Failure as exc:
            log.warning("could not destroy XAPI task %s: %s", task, exc)


# ---- provisioning steps (each is also a Prefect task in orchestration.xcpng_tasks) -------

def find_template(x: Any, name: str) -> str:
    """The template called `name`: a template, not a snapshot of one."""
    with xapi_errors(f"looking up template {name!r}"):
        for ref in x.VM.get_by_name_label(name):
            record = x.VM.get_record(ref)
            if record["is_a_template"] and not record["is_a_snapshot"]:
                return ref
        names = sorted(
            r["name_label"] for r in x.VM.get_all_records().values()
            if r["is_a_template"] and not r["is_a_snapshot"]
        )
    raise XapiError(
        f"no template named {name!r} on the pool; available templates: {', '.join(names[:20])}",
        "TEMPLATE_MISSING",
    )


def clone_template(x: Any, template: str, name: str) -> str:
    with xapi_errors(f"cloning the template into {name!r}"):
        return wait_for_task(x, x.Async.VM.clone(template, name), f"cloning into {name!r}")


def fix_disks_sr(x: Any, vm: str) -> None:
    """Point the template's disk specs at the pool's default SR (templates often name
    an SR of the pool they came from)."""
    with xapi_errors("fixing the template's disk storage"):
        other = x.VM.get_other_config(vm)
        if "disks" not in other:
            return
        pool = x.pool.get_all()[0]
        default_sr = x.pool.get_default_SR(pool)
        if default_sr == NULL_REF:
            raise XapiError("the pool has no default SR: set one or give the template an SR",
                            "VM_REQUIRES_SR")
        sr_uuid = x.SR.get_uuid(default_sr)
        spec = ET.fromstring(other["disks"])
        for disk in spec.iter("disk"):
            disk.set("sr", sr_uuid)
        x.VM.remove_from_other_config(vm, "disks")
        x.VM.add_to_other_config(vm, "disks", ET.tostring(spec, encoding="unicode"))


def provision_disks(x: Any, vm: str) -> None:
    with xapi_errors("provisioning the VM's disks"):
        wait_for_task(x, x.Async.VM.provision(vm), "provisioning disks")


def describe_and_tag(
    x: Any, vm: str, vm_id: str, owner: str, description: str, installation: str
) -> None:
    """Name the VM and tag it, so a reaper can find VMs this package leaked and teardown
    can tell them from VMs (and templates) it did not make."""
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    tags = {"vm_id": vm_id, "owner": owner, "created_at": now, "installation": installation}
    with xapi_errors("naming and tagging the VM"):
        x.VM.set_name_label(vm, f"bioxen-{vm_id}")
        x.VM.set_name_description(vm, description)
        existing = x.VM.get_other_config(vm)
        for key, value in tags.items():
            if TAG_PREFIX + key in existing:
                x.VM.remove_from_other_config(vm, TAG_PREFIX + key)
            x.VM.add_to_other_config(vm, TAG_PREFIX + key, value)


def start_vm(x: Any, vm: str) -> dict[str, Any]:
    """Start the VM; returns the guest-metrics marker seen before boot (to spot stale IPs)."""
    with xapi_errors("starting the VM"):
        marker = _metrics_marker(x, vm)
        if x.VM.get_power_state(vm) != "Running":
            wait_for_task(x, x.Async.VM.start(vm, False, False), "starting the VM")
        return marker


def wait_for_ip(
    x: Any, vm: str, before_boot: dict[str, Any], timeout: float = 300.0
) -> str:
    """The guest's IPv4 address, from guest metrics written after this boot, with backoff."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while time.monotonic() < deadline:
        with xapi_errors("waiting for the guest's IP address"):
            if x.VM.get_power_state(vm) == "Running":
                marker = _metrics_marker(x, vm)
                if marker["ref"] != NULL_REF and marker != before_boot:
                    ip = _usable_ip(x.VM_guest_metrics.get_networks(marker["ref"]))
                    if ip:
                        return ip
        time.sleep(delay)
        delay = min(delay * 1.5, 5.0)
    raise TransientInfrastructureError(
        f"the guest reported no usable IP address within {timeout:g}s "
        "(are the guest tools installed in the template?)"
    )


def tags_of(x: Any, vm: str) -> dict[str, str]:
    """The BioXen tags of one VM (empty for a VM BioXen did not make)."""
    with xapi_errors("reading the VM's tags"):
        other = x.VM.get_other_config(vm)
    return {k[len(TAG_PREFIX):]: v for k, v in other.items() if k.startswith(TAG_PREFIX)}


def teardown_vm(x: Any, vm: str) -> list[str]:
    """Hard shutdown if needed, destroy the VM, then its disk VDIs (never ISOs)."""
    destroyed = []
    with xapi_errors("tearing down the VM"):
        if x.VM.get_power_state(vm) != "Halted":
            try:
                wait_for_task(x, x.Async.VM.hard_shutdown(vm), "shutting the VM down")
            except TransientInfrastructureError:
                if x.VM.get_power_state(vm) != "Halted":
                    raise
        vdis = []
        for vbd in x.VM.get_VBDs(vm):
            record = x.VBD.get_record(vbd)
            if record["type"] == "Disk" and record["VDI"] != NULL_REF:
                vdis.append(record["VDI"])
        x.VM.destroy(vm)
        for vdi in vdis:
            x.VDI.destroy(vdi)
            destroyed.append(vdi)
    return destroyed


def find_tagged_vms(x: Any) -> dict[str, dict[str, str]]:
    """VMs this package created (by their other_config tags): ref -> tags."""
    with xapi_errors("listing VMs"):
        return {
            ref: {k[len(TAG_PREFIX):]: v for k, v in r["other_config"].items()
                  if k.startswith(TAG_PREFIX)}
            for ref, r in x.VM.get_all_records().items()
            # a clone stays a template until provisioned: tagged templates are ours too
            if not r["is_a_snapshot"] and TAG_PREFIX + "vm_id" in r["other_config"]
        }


def _metrics_marker(x: Any, vm: str) -> dict[str, Any]:
    ref = x.VM.get_guest_metrics(vm)
    if ref == NULL_REF:
        return {"ref": NULL_REF, "last_updated": None}
    return {"ref": ref, "last_updated": str(x.VM_guest_metrics.get_last_updated(ref))}


def _usable_ip(networks: dict[str, str]) -> str | None:
    for key in sorted(networks):
        if re.fullmatch(r"\d+/(ip|ipv4/\d+)", key):
            ip = networks[key]
            if ip and not ip.startswith("169.254."):
                return ip
    return None
