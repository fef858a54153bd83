"""A small XAPI client on the official XenAPI package: sessions, waits, provisioning, teardown.

Every call goes through XML-RPC exactly as xapi expects it. Failures are sorted at
the edge: transient ones (a busy object, a lost connection) become
`TransientInfrastructureError` so Prefect retries them; everything else (including a TLS
certificate that does not verify and a full SR) becomes `XapiError`, whose message tells
the user what to fix. `VM_BAD_POWER_STATE` is transient only where the caller re-reads the
power state before acting again (start, shutdown); elsewhere it is a bug to report.

Everything BioXen makes carries this installation's marks, so that a reaper can find it and
never touches what another installation made: VMs are named `bioxen-<installation>-<vm_id>`
at clone time (the one atomic moment) and tagged in `other_config` right after; their disk
VDIs carry the same tags.
"""

from __future__ import annotations

import datetime as dt
import http.client
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

from bioxen_flows.errors import TransientInfrastructureError, XapiError

log = logging.getLogger(__name__)

NULL_REF = "OpaqueRef:NULL"
TAG_PREFIX = "bioxen_"
NAME_PREFIX = "bioxen-"
INSTALLATION_CHARS = 12  # of the installation id, in every VM's name label
TRANSIENT_CODES = frozenset({
    "OTHER_OPERATION_IN_PROGRESS", "TOO_BUSY", "HOST_OFFLINE", "VM_IS_BEING_BOOTED",
    "CANNOT_CONTACT_HOST",
})
GONE_CODES = frozenset({"HANDLE_INVALID", "UUID_INVALID"})  # the object does not exist
CANCEL_WAIT_S = 10.0  # how long a timed-out task may take to honour task.cancel
ADVICE = {
    "SESSION_AUTHENTICATION_FAILED": "check xcpng_config.username and the password "
    "(environment variable named by password_env, or the Prefect Secret block)",
    "SR_FULL": "the storage repository is full: free space or choose another SR",
    # SM's SRNoSpace: the storage backend itself ran out of space
    "SR_BACKEND_FAILURE_44": "the storage repository is full: free space or choose another SR",
    "VM_BAD_POWER_STATE": "the VM is not in the power state this step needs",
    "VM_REQUIRES_SR": "the template's disks point at a storage repository this pool lacks",
    "UUID_INVALID": "an object the template refers to does not exist in this pool",
    "HANDLE_INVALID": "the XAPI object no longer exists",
    "PERMISSION_DENIED": "the XCP-ng user lacks the role for this operation",
}


def failure_code(failure: XenAPI.Failure) -> str:
    return str(failure.details[0]) if failure.details else "UNKNOWN"


def classify(
    failure: XenAPI.Failure, doing: str, transient: frozenset[str] = frozenset()
) -> Exception:
    """The exception a caller should see for an XAPI failure while `doing` something;
    `transient` adds codes that are worth retrying for this one step."""
    details = [str(d) for d in failure.details]
    code = details[0] if details else "UNKNOWN"
    if code in TRANSIENT_CODES or code in transient:
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
    """A session on a transport that times out; TLS verified against `ca_file` (or the
    system's CAs) unless the user asked for `ignore_ssl`."""
    if urlparse(url).scheme == "https":
        if endpoint.ignore_ssl:  # only when the user asked for it in config
            context = ssl._create_unverified_context()  # noqa: S323 (the user's explicit choice)
        else:
            try:
                context = ssl.create_default_context(cafile=endpoint.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise XapiError(f"cannot read ca_file {endpoint.ca_file}: {exc}",
                                "CA_FILE") from None
        return XenAPI.Session(url, transport=_TimeoutSafeTransport(endpoint.timeout_seconds,
                                                                    context))
    return XenAPI.Session(url, transport=_TimeoutTransport(endpoint.timeout_seconds))


def _tls_error(url: str, exc: ssl.SSLCertVerificationError) -> XapiError:
    return XapiError(
        f"the TLS certificate of {url} does not verify ({exc.verify_message or exc}): set "
        "xcpng_config.ca_file to the CA that signed the pool's certificate", "TLS_VERIFY")


@contextmanager
def xapi_session(endpoint: XapiEndpoint, password: str) -> Iterator[Any]:
    """A logged-in session (following a slave's redirect to the master); logout always.
    The password is masked in every log line from here on."""
    from bioxen_flows.redaction import register_secret

    register_secret(password)
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
        except ssl.SSLCertVerificationError as exc:  # an OSError, but never transient
            raise _tls_error(url, exc) from None
        except OSError as exc:
            raise TransientInfrastructureError(f"cannot reach XAPI at {url}: {exc}") from exc
    else:
        raise XapiError(f"too many HOST_IS_SLAVE redirects starting at {endpoint.url}")
    try:
        yield session.xenapi
    finally:
        try:
            session.xenapi.session.logout()
        except (XenAPI.Failure, OSError, http.client.HTTPException) as exc:
            # HTTPException: a signal (SIGTERM) cut a request short and the connection is
            # still mid-request; the logout must not replace what is propagating
            log.warning("XAPI logout failed: %s", exc)


@contextmanager
def xapi_errors(doing: str, transient: frozenset[str] = frozenset()) -> Iterator[None]:
    """Translate XenAPI failures and socket errors raised while `doing` something."""
    try:
        yield
    except XenAPI.Failure as failure:
        raise classify(failure, doing, transient) from None
    except ssl.SSLCertVerificationError as exc:
        raise _tls_error("the pool", exc) from None
    except (OSError, xmlrpc.client.ProtocolError, http.client.HTTPException) as exc:
        raise TransientInfrastructureError(f"XAPI connection lost while {doing}: {exc}") from exc


def wait_for_task(
    x: Any, task: str, doing: str, timeout: float = 600.0,
    transient: frozenset[str] = frozenset(),
) -> str:
    """Poll an async XAPI task to completion; the task object is always destroyed.

    On timeout the task is cancelled first and given `CANCEL_WAIT_S` to stop: destroying a
    pending task does not stop the work, which could finish later (a clone nobody tags).
    A task that completes while being cancelled counts as done."""
    status = _poll(x, task, timeout)
    try:
        if status == "pending":
            x.task.cancel(task)
            status = _poll(x, task, CANCEL_WAIT_S)
            if status != "success":
                raise TransientInfrastructureError(
                    f"XAPI task timed out after {timeout:g}s and was cancelled: {doing}")
        if status == "success":
            result = x.task.get_result(task)
            match = re.search(r"<value>(.*)</value>", result or "")
            return match.group(1) if match else result or ""
        raise classify(XenAPI.Failure(x.task.get_error_info(task)), doing, transient)
    finally:
        try:
            x.task.destroy(task)
        except XenAPI.Failure as exc:
            log.warning("could not destroy XAPI task %s: %s", task, exc)


def _poll(x: Any, task: str, timeout: float) -> str:
    """The task's status once it is no longer pending, or "pending" after `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while (status := x.task.get_status(task)) in ("pending", "cancelling"):
        if time.monotonic() > deadline:
            return "pending"
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
    return status


def vm_name(installation: str, vm_id: str) -> str:
    """The name label of `vm_id`'s VM: the installation is in it from the clone onwards."""
    return f"{name_prefix(installation)}{vm_id}"


def name_prefix(installation: str) -> str:
    return f"{NAME_PREFIX}{installation[:INSTALLATION_CHARS]}-"


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


def clone_template(x: Any, template: str, name: str, timeout: float = 600.0) -> str:
    with xapi_errors(f"cloning the template into {name!r}"):
        return wait_for_task(x, x.Async.VM.clone(template, name), f"cloning into {name!r}",
                             timeout)


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


def provision_disks(x: Any, vm: str, timeout: float = 600.0) -> None:
    """VM.provision, then the new disks carry the VM's tags (so orphans can be found).

    xapi's provision first turns the template into a VM, so a clone that is no longer a
    template was provisioned by an earlier attempt whose answer was lost: not again. The
    XML-RPC client itself resends a call once when the connection drops, so a second
    provision task may meet the first's work: ONLY_PROVISION_TEMPLATE then means done."""
    try:
        with xapi_errors("provisioning the VM's disks"):
            if x.VM.get_is_a_template(vm):
                wait_for_task(x, x.Async.VM.provision(vm), "provisioning disks", timeout)
    except XapiError as exc:
        if exc.code != "ONLY_PROVISION_TEMPLATE":
            raise
        log.info("VM %s was provisioned by an earlier attempt", vm)
    tag_disks(x, vm)


def new_tags(vm_id: str, owner: str, installation: str) -> dict[str, str]:
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    return {"vm_id": vm_id, "owner": owner, "created_at": now, "installation": installation}


def describe_and_tag(x: Any, vm: str, description: str, tags: dict[str, str]) -> None:
    """Describe the VM and tag it, so a reaper can find VMs this package leaked and teardown
    can tell them from VMs (and templates) it did not make."""
    with xapi_errors("tagging the VM"):
        x.VM.set_name_description(vm, description)
        _set_tags(x, "VM", vm, tags)


def tag_disks(x: Any, vm: str) -> None:
    """Copy the VM's BioXen tags onto its disk VDIs (never ISOs, never shared disks)."""
    tags = tags_of(x, vm)
    with xapi_errors("tagging the VM's disks"):
        for vdi in _disk_vdis(x, vm):
            _set_tags(x, "VDI", vdi, tags)


def _set_tags(x: Any, cls: str, ref: str, tags: dict[str, str]) -> None:
    api = getattr(x, cls)
    existing = api.get_other_config(ref)
    for key, value in tags.items():
        if existing.get(TAG_PREFIX + key) == value:
            continue
        if TAG_PREFIX + key in existing:
            api.remove_from_other_config(ref, TAG_PREFIX + key)
        api.add_to_other_config(ref, TAG_PREFIX + key, value)


def _disk_vdis(x: Any, vm: str) -> list[str]:
    vdis = []
    for vbd in x.VM.get_VBDs(vm):
        record = x.VBD.get_record(vbd)
        # only disks the VM owns (xapi marks the VBDs it provisions with "owner"): never a
        # CD/ISO, never a disk attached from elsewhere
        if (record["type"] == "Disk" and record["VDI"] != NULL_REF
                and "owner" in record["other_config"]):
            vdis.append(record["VDI"])
    return vdis


def start_vm(x: Any, vm: str) -> dict[str, Any]:
    """Start the VM; returns the guest-metrics marker seen before boot (to spot stale IPs)."""
    # VM_BAD_POWER_STATE here means the state moved under us; the retry re-reads it
    with xapi_errors("starting the VM", transient=frozenset({"VM_BAD_POWER_STATE"})):
        marker = _metrics_marker(x, vm)
        if x.VM.get_power_state(vm) != "Running":
            wait_for_task(x, x.Async.VM.start(vm, False, False), "starting the VM",
                          transient=frozenset({"VM_BAD_POWER_STATE"}))
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


def teardown_vm(x: Any, vm: str, tags: dict[str, str] | None = None) -> list[str]:
    """Hard shutdown if needed, destroy the VM, then its disk VDIs (never ISOs).

    The disks are tagged (with `tags`, or the VM's own) before VM.destroy, so a teardown
    that stops between the two leaves disks the reaper finds."""
    destroyed = []
    halting = frozenset({"VM_BAD_POWER_STATE"})  # it halted meanwhile: checked below
    with xapi_errors("tearing down the VM"):
        if x.VM.get_power_state(vm) != "Halted":
            try:
                wait_for_task(x, x.Async.VM.hard_shutdown(vm), "shutting the VM down",
                              transient=halting)
            except TransientInfrastructureError:
                if x.VM.get_power_state(vm) != "Halted":
                    raise
        vdis = _disk_vdis(x, vm)
        for vdi in vdis:
            _set_tags(x, "VDI", vdi, tags if tags is not None else tags_of(x, vm))
        x.VM.destroy(vm)
        for vdi in vdis:
            destroy_vdi(x, vdi)
            destroyed.append(vdi)
    return destroyed


def destroy_vdi(x: Any, vdi: str) -> None:
    """VDI.destroy; a VDI that is already gone is not an error."""
    try:
        x.VDI.destroy(vdi)
    except XenAPI.Failure as failure:
        if failure_code(failure) not in GONE_CODES:
            raise


def vm_records(x: Any) -> dict[str, dict[str, Any]]:
    """Every VM that is neither a snapshot nor a control domain: ref -> record (a clone
    stays a template until provisioned, so templates are included)."""
    with xapi_errors("listing VMs"):
        return {ref: r for ref, r in x.VM.get_all_records().items()
                if not r["is_a_snapshot"] and not r["is_control_domain"]}


def vdi_records(x: Any) -> dict[str, dict[str, Any]]:
    with xapi_errors("listing disks"):
        return x.VDI.get_all_records()


def tags_in(record: dict[str, Any]) -> dict[str, str]:
    """The BioXen tags in a VM's or VDI's record."""
    return {k[len(TAG_PREFIX):]: v for k, v in record["other_config"].items()
            if k.startswith(TAG_PREFIX)}


def install_time(x: Any, record: dict[str, Any]) -> dt.datetime | None:
    """When xapi made the VM (VM_metrics.install_time), for VMs that carry no tags yet."""
    with xapi_errors("reading the VM's metrics"):
        if record.get("metrics", NULL_REF) == NULL_REF:
            return None
        value = x.VM_metrics.get_install_time(record["metrics"])
    return parse_xapi_time(value)


def parse_xapi_time(value: Any) -> dt.datetime | None:
    """An XML-RPC DateTime ("20230101T00:00:00Z") or ISO string as an aware datetime."""
    text = str(getattr(value, "value", value))
    for fmt in ("%Y%m%dT%H:%M:%SZ", "%Y%m%dT%H:%M:%S"):
        try:
            return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.timezone.utc)
        except ValueError:
            continue
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


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
