"""An XAPI simulator: a loopback XML-RPC server that answers like xapi, XCP-ng's API daemon.

Production code talks to it with the official ``XenAPI`` client, unchanged, so the client's
retry, polling and cleanup logic can be tested (and demonstrated) without a hypervisor::

    with XapiSimulator(boot_seconds=0.2) as sim:
        session = XenAPI.Session(sim.url)
        session.login_with_password("root", "secret", "1.0", "bioxen")

A test utility, as moto is for AWS: production code never imports it. ``tls=True`` serves
HTTPS with a certificate signed by a throw-away CA (``ca_file``), so clients' certificate
verification is exercised; ``guest_reachable(ip)`` tells a test SSH server whether a guest
at that address exists (a running, booted VM reports it), so a client that talks to a VM it
destroyed finds nobody there.

What it simulates: one pool with one host; a "Local storage" SR (type ext, the pool's
default SR) and an ISO SR (content_type iso) holding one ISO VDI; the control domain; one
template per name in ``templates`` (each with xapi's ``other_config["disks"]`` provision XML,
whose ``sr`` attribute names an SR that does NOT exist here -- clients must fix or drop it
before VM.provision -- plus a CD VBD on the ISO and stale guest metrics from the VM the
template was made from); and a snapshot with the same name_label as the first template
(``is_a_snapshot=True, is_a_template=True``), which clients must skip.

Wire format, as xapi: every answer is ``{"Status": "Success", "Value": v}`` or
``{"Status": "Failure", "ErrorDescription": [code, *strings]}``; int64 fields are strings
("1073741824"); power states are "Halted"/"Running"/"Paused" in records but lowercase in
VM_BAD_POWER_STATE (expected states joined by ", ", e.g. "paused, suspended, running");
null refs are "OpaqueRef:NULL"; dates are XML-RPC DateTime ("20230101T00:00:00Z"); Async.*
calls return a task ref whose ``result`` is "<value>OpaqueRef:...</value>" (or "" for void).
Error codes and arguments follow xapi's: SESSION_AUTHENTICATION_FAILED [user, "Authentication
failure"], HOST_IS_SLAVE [master], SESSION_INVALID [ref], HANDLE_INVALID [class, ref],
UUID_INVALID [class, uuid], MESSAGE_METHOD_UNKNOWN [method], MESSAGE_PARAMETER_COUNT_MISMATCH
[method, expected, received], VM_IS_TEMPLATE / VM_IS_SNAPSHOT [vm, op], ONLY_PROVISION_TEMPLATE,
MAP_DUPLICATE_KEY [class, field, ref, key], VDI_IN_USE [vdi, "destroy"], INTERNAL_ERROR.

Deliberate differences from xapi:
- HOST_IS_SLAVE carries whatever ``slave_redirect_to`` was given; tests pass "127.0.0.1:PORT"
  so that two simulators can share one machine. Real xapi sends the master's address only
  (an IP, no port); clients should build the URL as ``f"{scheme}://{address}"``.
- Only the classes and methods listed in ``_HANDLERS`` and the generic accessors
  (get_all, get_all_records, get_record, get_by_uuid, get_by_name_label, get_<field>,
  set_<field> for a few fields, add_to_/remove_from_<map field>) exist; the rest answer
  MESSAGE_METHOD_UNKNOWN. One network with a VIF per VM (VM.clone copies them, VM.destroy
  removes them); no PBDs, events, RBAC, SR capacity or real disks.
- VM.provision clears ``is_a_template`` first, as xapi does, so a provision that fails
  (SR_FULL, VM_REQUIRES_SR) leaves a halted non-template VM behind. Provisioned and cloned
  disk VBDs carry ``other_config["owner"] = "true"`` (the disks the VM owns).
- Socket faults: ``inject_reset(method)`` drops the connection mid-call (before or after
  the call took effect), ``slow_methods[method] = seconds`` delays one method's answers.
- Tasks of a session that logged out are removed once finished (xapi's GC does this
  later, on a timer).
- VDI.destroy refuses (VDI_IN_USE) while any VBD of an existing VM points at the VDI, attached
  or not; xapi checks only currently attached VBDs (and ISO SRs may refuse deletion anyway).
- Async calls check the session up front and everything else inside the task, as xapi does;
  tasks finish after ``max(latency_seconds, 0.05)`` instead of after real work.
- The guest "boots" ``boot_seconds`` after VM.start (Running); then its guest metrics carry
  ``guest_ip`` and a fresh ``last_updated``. Until then the VM keeps the stale metrics that
  VM.clone copied from the template (as xapi does), or has none if ``stale_guest_metrics`` is
  False. Metrics survive a shutdown, so a restarted VM shows stale metrics again until boot.
"""

from __future__ import annotations

import copy
import inspect
import socket
import ssl
import struct
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any
from xmlrpc.client import DateTime
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

NULL = "OpaqueRef:NULL"
GIB = 1024**3
STALE_IP = "192.0.2.66"  # TEST-NET-1: the template's old address, never reachable
_EPOCH = "19700101T00:00:00Z"
_STALE_TIME = "20230101T00:00:00Z"


class XapiError(Exception):
    """A handler's failure; becomes ``{"Status": "Failure", "ErrorDescription": [...]}``."""

    def __init__(self, code: str, *args: object) -> None:
        super().__init__(code, *args)
        self.description = [code, *(str(a) for a in args)]


def _now() -> DateTime:
    return DateTime(datetime.now(timezone.utc).strftime("%Y%m%dT%H:%M:%SZ"))


def _networks(ip: str) -> dict[str, str]:
    return {"0/ip": ip, "0/ipv4/0": ip, "0/ipv6/0": "fe80::a8bb:ccff:fedd:eeff"}


# Every record of a class has exactly these fields (plus "uuid"); also the getter schema.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "pool": dict(name_label="", name_description="", master=NULL, default_SR=NULL,
                 suspend_image_SR=NULL, crash_dump_SR=NULL, other_config={}),
    "host": dict(name_label="", name_description="", hostname="", address="", enabled=True,
                 API_version_major="2", API_version_minor="21", API_version_vendor="XenSource",
                 software_version={"product_brand": "XCP-ng", "product_version": "8.3.0"},
                 other_config={}),
    "SR": dict(name_label="", name_description="", type="", content_type="", shared=False,
               physical_size="0", physical_utilisation="0", virtual_allocation="0", VDIs=[],
               PBDs=[], other_config={}, sm_config={}),
    "VDI": dict(name_label="", name_description="", SR=NULL, VBDs=[], virtual_size="0",
                physical_utilisation="0", type="user", sharable=False, read_only=False,
                managed=True, missing=False, is_a_snapshot=False, other_config={}, sm_config={}),
    "VBD": dict(VM=NULL, VDI=NULL, device="", userdevice="0", bootable=False, mode="RW",
                type="Disk", empty=False, currently_attached=False, other_config={}),
    "network": dict(name_label="", name_description="", bridge="", MTU="1500", VIFs=[],
                    other_config={}),
    "VIF": dict(VM=NULL, network=NULL, device="0", MAC="", MTU="1500",
                currently_attached=False, other_config={}),
    "VM_metrics": dict(install_time=DateTime(_EPOCH), start_time=DateTime(_EPOCH),
                       memory_actual="0", VCPUs_number="0", other_config={}),
    "VM": dict(name_label="", name_description="", power_state="Halted", is_a_template=False,
               is_default_template=False, is_a_snapshot=False, snapshot_of=NULL, snapshots=[],
               snapshot_time=DateTime(_EPOCH), is_control_domain=False, resident_on=NULL,
               domid="-1", VBDs=[], VIFs=[], guest_metrics=NULL, metrics=NULL,
               other_config={}, tags=[],
               memory_static_max=str(GIB), memory_dynamic_max=str(GIB),
               memory_dynamic_min=str(GIB), memory_static_min=str(GIB // 2), VCPUs_max="1",
               VCPUs_at_startup="1", blocked_operations={}, current_operations={},
               HVM_boot_policy="BIOS order", PV_bootloader="", platform={}, xenstore_data={}),
    "VM_guest_metrics": dict(os_version={}, PV_drivers_detected=True, networks={}, other={},
                             live=True, last_updated=DateTime(_EPOCH)),
    "task": dict(name_label="", name_description="", status="pending", progress=0.0,
                 result="", error_info=[], created=DateTime(_EPOCH),
                 finished=DateTime(_EPOCH), resident_on=NULL, type="", other_config={}),
    "session": dict(this_host=NULL, this_user=NULL, last_active=DateTime(_EPOCH), pool=False,
                    originator="", auth_user_name=""),
}
_SETTABLE = {"name_label", "name_description", "other_config", "tags", "is_a_template",
             "memory_static_max", "memory_dynamic_max", "memory_dynamic_min",
             "memory_static_min", "VCPUs_max", "VCPUs_at_startup", "xenstore_data"}
# xapi's allowed power states per VM operation (Xapi_vm_lifecycle.allowed_power_states)
_POWER_STATES = {"start": ["Halted"], "provision": ["Halted"], "clone": ["Halted"],
                 "destroy": ["Halted", "Suspended"], "clean_shutdown": ["Running"],
                 "hard_shutdown": ["Paused", "Suspended", "Running"]}
_LOOKUPS = {"get_all", "get_all_records", "get_by_uuid", "get_by_name_label"}
_TEMPLATE_OPS = {"clone", "provision", "destroy"}
_SNAPSHOT_OPS = {"clone", "destroy", "hard_shutdown"}

_HANDLERS: dict[str, Callable[..., Any]] = {}


def _api(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a method under its xapi name; its parameters are xapi's, session first."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        _HANDLERS[name] = fn
        return fn

    return register


_current = threading.local()  # the request handler serving this thread's call


class _ConnectionReset(Exception):
    """Raised inside a call whose connection the simulator has just reset."""


class _Server(ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True
    request_queue_size = 128  # 20+ clients connecting at once
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A reset or refused connection is the point of a fault, not news."""


class _RequestHandler(SimpleXMLRPCRequestHandler):
    rpc_paths = ()  # like xapi, answer on any path ("/", "/RPC2", ...)

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        _current.handler = self
        try:
            super().do_POST()
        finally:
            _current.handler = None


def _reset_connection() -> None:
    """Drop the current client's TCP connection with a RST, as a crashed xapi or a lost
    network would: the client sees ConnectionResetError, not an XML-RPC answer."""
    handler = getattr(_current, "handler", None)
    if handler is not None:
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      struct.pack("ii", 1, 0))
        handler.connection.shutdown(socket.SHUT_RDWR)  # the answer can no longer be sent
        handler.close_connection = True
    raise _ConnectionReset


def write_test_ca(folder: Path, hostname: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for `hostname` signed by it, as PEM files
    in `folder`: (ca_file, cert_file, key_file)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc)

    def cert(subject: str, key: Any, issuer: str, signer: Any, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(minutes=5))
                   .not_valid_after(now + timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        else:
            try:
                name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(hostname))
            except ValueError:
                name = x509.DNSName(hostname)
            builder = builder.add_extension(x509.SubjectAlternativeName([name]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca_cert = cert("BioXen test CA", ca_key, "BioXen test CA", ca_key, True)
    server_cert = cert(hostname, server_key, "BioXen test CA", ca_key, False)
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return paths


class XapiSimulator:
    """A fake xapi on loopback. Knobs may be changed at any time, also while running.

    Attributes: ``latency_seconds`` (every call sleeps this long), ``slow_methods`` (method
    name -> extra seconds before answering), ``boot_seconds`` (from VM.start to fresh guest
    metrics), ``never_report_ip`` (booted guests report metrics with no network at all),
    ``stale_guest_metrics`` (clones copy the template's old metrics; False: they start with
    OpaqueRef:NULL), ``task_seconds`` (how long an Async task runs, at least 0.05),
    ``calls`` (every method name received, in order).

    ``tls_dir``: serve HTTPS with a certificate from a fresh test CA written there
    (``ca_file`` is the CA to trust).
    """

    def __init__(self, *, username: str = "root", password: str = "secret",
                 templates: Sequence[str] = ("bioxen-guest",), guest_ip: str = "127.0.0.1",
                 boot_seconds: float = 0.5, latency_seconds: float = 0.0,
                 host: str = "127.0.0.1", port: int = 0, tls_dir: Path | None = None) -> None:
        self.username, self.password = username, password
        self.guest_ip, self.host, self.port = guest_ip, host, port
        self.boot_seconds, self.latency_seconds = boot_seconds, latency_seconds
        self.task_seconds = 0.05
        self.slow_methods: dict[str, float] = {}
        self.never_report_ip = False
        self.stale_guest_metrics = True
        self.storage_full: str | None = None  # "SR_FULL" or "SR_BACKEND_FAILURE_44"
        self.ca_file: Path | None = None
        self._tls: tuple[Path, Path] | None = None
        if tls_dir is not None:
            self.ca_file, cert, key = write_test_ca(Path(tls_dir), host)
            self._tls = (cert, key)
        self._resets: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self._lock = threading.RLock()
        self._db: dict[str, dict[str, dict[str, Any]]] = {cls: {} for cls in _DEFAULTS}
        self._faults: dict[str, dict[str, Any]] = {}
        self._login_fault: list[str] | None = None
        self._master_address: str | None = None
        self._boots: Counter[str] = Counter()  # VM ref -> start count; stale boot timers skip
        self._booted: dict[str, int] = {}  # VM ref -> the start whose guest reported in
        self._task_session: dict[str, str] = {}  # task ref -> the session that made it
        self._timers: set[threading.Timer] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.missing_sr_uuid = str(uuid.uuid4())  # what the templates' provision XML names
        self._build_pool(list(templates))

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> str:
        """Serve in a background thread; returns the URL, ``http://127.0.0.1:PORT``."""
        if self._server is None:
            self._server = _Server((self.host, self.port), requestHandler=_RequestHandler,
                                   logRequests=False, allow_none=True)
            self._server.register_instance(self)
            if self._tls is not None:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(*self._tls)
                self._server.socket = context.wrap_socket(
                    self._server.socket, server_side=True, do_handshake_on_connect=False)
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": 0.05}, daemon=True)
            self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and cancel pending task/boot timers (idempotent)."""
        with self._lock:
            for timer in list(self._timers):
                timer.cancel()
            self._timers.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> XapiSimulator:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        """HOST:PORT -- what a slave simulator names as its master (see slave_redirect_to)."""
        return f"{self.host}:{self.port}"

    # ------------------------------------------------------------ fault knobs
    def fail_login_with(self, code: str | None, *args: str) -> None:
        """Make every login fail with ``[code, *args]`` (None: log in normally again).

        SESSION_AUTHENTICATION_FAILED without args gets xapi's [user, "Authentication failure"].
        """
        self._login_fault = None if code is None else [code, *args]

    def slave_redirect_to(self, master_address: str | None) -> None:
        """Act as a pool slave: logins fail with ["HOST_IS_SLAVE", master_address]."""
        self._master_address = master_address

    def inject_transient(self, method_name: str, times: int = 1,
                         code: str = "OTHER_OPERATION_IN_PROGRESS",
                         args: Sequence[str] | None = None) -> None:
        """Fail the next ``times`` calls of ``method_name`` with ``code``.

        "VM.clone" matches both VM.clone (the call fails) and Async.VM.clone (its task fails,
        as in xapi); "Async.VM.clone" makes the Async call itself fail. Without ``args`` the
        arguments are realistic: OTHER_OPERATION_IN_PROGRESS ["VM.clone", vm] (xapi's VM form;
        other classes [class, ref, op]), SR_FULL [requested, maximum], VM_REQUIRES_SR [vm, sr],
        anything else [ref] (the call's first argument after the session, if a ref).
        """
        with self._lock:
            self._faults[method_name] = {"times": times, "code": code, "args": args}

    def inject_permanent(self, method_name: str, code: str, *args: str) -> None:
        """Fail every call of ``method_name`` with ``code`` until ``clear_faults()``."""
        with self._lock:
            self._faults[method_name] = {"times": None, "code": code, "args": args or None}

    def inject_reset(self, method_name: str, times: int = 1, after_call: bool = False) -> None:
        """Reset the connection of the next ``times`` calls of ``method_name`` (exact name,
        e.g. "Async.VM.clone"): before the call takes effect, or ``after_call`` (it did,
        but the client never hears so: the case that leaks)."""
        with self._lock:
            self._resets[method_name] = {"times": times, "after": after_call}

    def clear_faults(self) -> None:
        """Forget injected method faults, resets, slow methods, login faults and the slave
        redirect."""
        with self._lock:
            self._faults.clear()
            self._resets.clear()
            self.slow_methods.clear()
        self._login_fault = self._master_address = None

    def guest_reachable(self, ip: str) -> bool:
        """Whether a guest answers at `ip`: a running VM whose agent reported that address
        since it booted (what a test SSH server asks before accepting a connection)."""
        with self._lock:
            for ref, vm in self._db["VM"].items():
                metrics = self._db["VM_guest_metrics"].get(vm["guest_metrics"])
                if (vm["power_state"] == "Running" and not vm["is_control_domain"]
                        and metrics is not None and ip in metrics["networks"].values()
                        and self._booted.get(ref) == self._boots[ref]):
                    return True
        return False

    def expire_sessions(self) -> None:
        """Invalidate every session: the next call answers SESSION_INVALID (XenAPI re-logs in)."""
        with self._lock:
            self._db["session"].clear()

    # ------------------------------------------------------- inspection helpers
    def vms(self, include_templates: bool = False) -> list[dict[str, Any]]:
        """Guest VM records (plus key "ref"): no control domain; no templates/snapshots unless
        ``include_templates`` (a cloned-but-unprovisioned VM is still a template)."""
        return [r for r in self._records("VM") if not r["is_control_domain"]
                and (include_templates or not r["is_a_template"])]

    def vdis(self, kind: str | None = None) -> list[dict[str, Any]]:
        """VDI records (plus "ref"); kind "iso" = VDIs on an ISO SR, "system"/"user" = that
        VDI type on other SRs (xapi types ISO VDIs "user"), None = all."""
        out = []
        iso_srs = {ref for ref, sr in self._db["SR"].items() if sr["content_type"] == "iso"}
        for r in self._records("VDI"):
            iso = r["SR"] in iso_srs
            if kind is None or (kind == "iso" and iso) or (not iso and r["type"] == kind):
                out.append(r)
        return out

    def tasks(self) -> list[dict[str, Any]]:
        """Task records (plus "ref") not yet destroyed by task.destroy."""
        return self._records("task")

    def sessions(self) -> list[dict[str, Any]]:
        """Session records (plus "ref") logged in and not logged out or expired."""
        return self._records("session")

    def record(self, ref: str) -> dict[str, Any]:
        """A copy of any object's record (plus "ref"); KeyError if there is none."""
        with self._lock:
            for cls, table in self._db.items():
                if ref in table:
                    return {**copy.deepcopy(table[ref]), "ref": ref, "class": cls}
        raise KeyError(ref)

    @property
    def call_counts(self) -> Counter[str]:
        """How many times each method name was received."""
        with self._lock:
            return Counter(self.calls)

    def _records(self, cls: str) -> list[dict[str, Any]]:
        with self._lock:
            return [{**copy.deepcopy(r), "ref": ref} for ref, r in self._db[cls].items()]

    # ------------------------------------------------------------- the state
    def _new(self, cls: str, **fields: Any) -> str:
        unknown = set(fields) - set(_DEFAULTS[cls])
        assert not unknown, f"{cls} has no field(s) {unknown}"
        ref = f"OpaqueRef:{uuid.uuid4()}"
        self._db[cls][ref] = {"uuid": str(uuid.uuid4()),
                              **copy.deepcopy({**_DEFAULTS[cls], **fields})}
        return ref

    def _get(self, cls: str, ref: str) -> dict[str, Any]:
        try:
            return self._db[cls][ref]
        except (KeyError, TypeError):
            raise XapiError("HANDLE_INVALID", cls, ref) from None

    def _by_uuid(self, cls: str, uuid_: str) -> str:
        for ref, r in self._db[cls].items():
            if r["uuid"] == uuid_:
                return ref
        raise XapiError("UUID_INVALID", cls, uuid_)

    def _new_vdi(self, sr: str, **fields: Any) -> str:
        vdi = self._new("VDI", SR=sr, **fields)
        self._db["SR"][sr]["VDIs"].append(vdi)
        return vdi

    def _new_vif(self, vm: str, device: str) -> str:
        mac = "aa:bb:cc:" + ":".join(f"{b:02x}" for b in uuid.uuid4().bytes[:3])
        vif = self._new("VIF", VM=vm, network=self._network, device=device, MAC=mac)
        self._db["VM"][vm]["VIFs"].append(vif)
        self._db["network"][self._network]["VIFs"].append(vif)
        return vif

    def _new_vbd(self, vm: str, vdi: str, **fields: Any) -> str:
        vbd = self._new("VBD", VM=vm, VDI=vdi, **fields)
        self._db["VM"][vm]["VBDs"].append(vbd)
        self._db["VDI"][vdi]["VBDs"].append(vbd)
        return vbd

    def _build_pool(self, templates: list[str]) -> None:
        self._host = self._new("host", name_label="xcp-ng-sim", hostname="xcp-ng-sim",
                               address=self.host)
        local = self._new("SR", name_label="Local storage", type="ext", content_type="user",
                          physical_size=str(500 * GIB))
        iso_sr = self._new("SR", name_label="ISO library", type="iso", content_type="iso",
                           physical_size=str(50 * GIB))
        self._pool = self._new("pool", master=self._host, default_SR=local,
                               suspend_image_SR=local, crash_dump_SR=local)
        iso_size = str(300 * 1024**2)
        iso = self._new_vdi(iso_sr, name_label="bioxen-guest-tools.iso", read_only=True,
                            virtual_size=iso_size, physical_utilisation=iso_size)
        self._network = self._new("network", name_label="Pool-wide network associated with eth0",
                                  bridge="xenbr0")
        self._new("VM", name_label="Control domain on host: xcp-ng-sim", is_control_domain=True,
                  power_state="Running", domid="0", resident_on=self._host)
        disks = (f'<provision><disk device="0" size="{8 * GIB}" sr="{self.missing_sr_uuid}" '
                 'bootable="true" type="system"/></provision>')
        for i, name in enumerate(templates):
            metrics = self._new("VM_guest_metrics", networks=_networks(STALE_IP),
                                last_updated=DateTime(_STALE_TIME))
            tmpl = self._new("VM", name_label=name, is_a_template=True, guest_metrics=metrics,
                             name_description=f"{name}: bio-VM guest template",
                             other_config={"disks": disks}, metrics=self._new(
                                 "VM_metrics", install_time=DateTime(_STALE_TIME)))
            self._new_vbd(tmpl, iso, type="CD", userdevice="3", mode="RO")
            self._new_vif(tmpl, "0")
            if i == 0:
                snap = self._new("VM", name_label=name, is_a_template=True, is_a_snapshot=True,
                                 snapshot_of=tmpl, snapshot_time=DateTime(_STALE_TIME),
                                 other_config={"disks": disks})
                self._db["VM"][tmpl]["snapshots"].append(snap)

    # ------------------------------------------------------------- dispatching
    def _dispatch(self, method: str, params: tuple[Any, ...]) -> dict[str, Any]:
        """SimpleXMLRPCServer's hook: every call arrives here, in one of the server threads."""
        with self._lock:
            self.calls.append(method)
            reset = self._resets.get(method)
            if reset is not None:
                reset["times"] -= 1
                if reset["times"] <= 0:
                    del self._resets[method]
        delay = self.latency_seconds + self.slow_methods.get(method, 0.0)
        if delay > 0:
            time.sleep(delay)
        if reset is not None and not reset["after"]:
            _reset_connection()
        try:
            value = self._call(method, list(params))
            if reset is not None:
                _reset_connection()
            return {"Status": "Success", "Value": value}
        except XapiError as e:
            return {"Status": "Failure", "ErrorDescription": e.description}
        except _ConnectionReset:
            raise
        except Exception as e:  # a simulator bug still answers like xapi would
            return {"Status": "Failure", "ErrorDescription": ["INTERNAL_ERROR", repr(e)]}

    def _call(self, method: str, params: list[Any]) -> Any:
        if method == "session.login_with_password":
            return self._login(*params) if 2 <= len(params) <= 4 else self._arity(method, 4, params)
        is_async = method.startswith("Async.")
        name = method.removeprefix("Async.")
        fn = self._resolve(name, is_async)
        if fn is None:
            raise XapiError("MESSAGE_METHOD_UNKNOWN", method)
        try:
            inspect.signature(fn).bind(*params)
        except TypeError:
            self._arity(method, len(inspect.signature(fn).parameters), params)
        with self._lock:
            if params[0] not in self._db["session"]:
                raise XapiError("SESSION_INVALID", params[0])
            self._raise_fault(method, params)
            if not is_async:
                return fn(*params)
            task = self._new("task", name_label=method, created=_now(), resident_on=self._host)
            self._task_session[task] = params[0]
        self._after(max(self.latency_seconds, self.task_seconds, 0.05), self._run_task, task,
                    name, fn, params)
        return task

    @staticmethod
    def _arity(method: str, expected: int, params: list[Any]) -> Any:
        raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", method, expected, len(params))

    def _run_task(self, task: str, name: str, fn: Callable[..., Any], params: list[Any]) -> None:
        with self._lock:
            record = self._db["task"].get(task)
            if record is None or record["status"] != "pending":
                return  # destroyed or cancelled meanwhile
            try:
                self._raise_fault(name, params)
                value = fn(*params)
                record.update(status="success", result=f"<value>{value}</value>" if value else "")
            except XapiError as e:
                record.update(status="failure", error_info=e.description)
            record.update(progress=1.0, finished=_now())
            if self._task_session.get(task) not in self._db["session"]:
                self._forget_task(task)  # its session is gone: xapi's GC collects it

    def _raise_fault(self, method: str, params: list[Any]) -> None:
        fault = self._faults.get(method)
        if fault is None:
            return
        if fault["times"] is not None:
            fault["times"] -= 1
            if fault["times"] <= 0:
                del self._faults[method]
        args = fault["args"]
        raise XapiError(fault["code"], *(self._fault_args(fault["code"], method, params)
                                         if args is None else args))

    def _fault_args(self, code: str, method: str, params: list[Any]) -> list[str]:
        cls, _, op = method.removeprefix("Async.").rpartition(".")
        ref = params[1] if len(params) > 1 and str(params[1]).startswith("OpaqueRef:") else ""
        if code == "OTHER_OPERATION_IN_PROGRESS":
            return [f"VM.{op}", ref] if cls == "VM" else [cls, ref, op]
        if code == "SR_FULL":
            return [str(8 * GIB), str(4 * GIB)]
        if code == "SR_BACKEND_FAILURE_44":  # SM's SRNoSpace: [code, stdout, stderr]
            return ["", "There is insufficient space"]
        if code == "VM_REQUIRES_SR":
            return [ref, self._db["pool"][self._pool]["default_SR"]]
        return [ref] if ref else []

    def _after(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        def fire() -> None:
            with self._lock:
                self._timers.discard(timer)
            fn(*args)

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        with self._lock:
            self._timers.add(timer)
        timer.start()

    def _resolve(self, name: str, is_async: bool) -> Callable[..., Any] | None:
        """An explicit handler, or a generic accessor built from the class's fields."""
        if name in _HANDLERS:
            return _HANDLERS[name].__get__(self)
        cls, _, op = name.partition(".")
        if is_async or cls not in _DEFAULTS:
            return None
        if op.startswith("get_") and (cls == "session" or op not in _LOOKUPS):
            return self._getter(cls, op)
        if cls == "session":
            return None
        table = self._db[cls]
        if op == "get_all":
            return lambda s: list(table)
        if op == "get_all_records":
            return lambda s: copy.deepcopy(table)
        if op == "get_by_uuid":
            return lambda s, uuid_: self._by_uuid(cls, uuid_)
        if op == "get_by_name_label" and "name_label" in _DEFAULTS[cls]:
            return lambda s, label: [r for r, v in table.items() if v["name_label"] == label]
        return self._setter(cls, op)

    def _getter(self, cls: str, op: str) -> Callable[..., Any] | None:
        field = op.removeprefix("get_")
        if field == "record":
            return lambda s, ref: copy.deepcopy(self._get(cls, ref))
        if field in _DEFAULTS[cls] or field == "uuid":
            return lambda s, ref: copy.deepcopy(self._get(cls, ref)[field])
        return None

    def _setter(self, cls: str, op: str) -> Callable[..., Any] | None:
        """set_<field> (a few fields), add_to_<map> and remove_from_<map>."""
        for prefix in ("set_", "add_to_", "remove_from_"):
            if op.startswith(prefix):
                field = op.removeprefix(prefix)
                break
        else:
            return None
        default = _DEFAULTS[cls].get(field)

        def set_(s: str, ref: str, value: Any) -> str:
            self._get(cls, ref)[field] = str(value) if isinstance(default, str) else value
            return ""

        def add_to(s: str, ref: str, key: str, value: str) -> str:
            mapping = self._get(cls, ref)[field]
            if key in mapping:
                raise XapiError("MAP_DUPLICATE_KEY", cls, field, ref, key)
            mapping[key] = value
            return ""

        def remove_from(s: str, ref: str, key: str) -> str:
            self._get(cls, ref)[field].pop(key, None)  # a missing key is not an error
            return ""

        if prefix == "set_":
            return set_ if field in _SETTABLE and default is not None else None
        if not isinstance(default, dict):
            return None
        return add_to if prefix == "add_to_" else remove_from

    # ------------------------------------------------------------- xapi methods
    def _login(self, user: str, password: str, version: str = "", originator: str = "") -> str:
        if self._master_address is not None:
            raise XapiError("HOST_IS_SLAVE", self._master_address)
        if self._login_fault is not None:
            code, *args = self._login_fault
            if code == "SESSION_AUTHENTICATION_FAILED" and not args:
                args = [user, "Authentication failure"]
            raise XapiError(code, *args)
        if (user, password) != (self.username, self.password):
            raise XapiError("SESSION_AUTHENTICATION_FAILED", user, "Authentication failure")
        with self._lock:
            return self._new("session", this_host=self._host, auth_user_name=user,
                             originator=originator, last_active=_now())

    @_api("session.logout")
    def _logout(self, s: str) -> str:
        """Like xapi's GC, finished tasks of a session that has gone go with it."""
        self._db["session"].pop(s, None)
        for task, owner in list(self._task_session.items()):
            if owner == s and self._db["task"].get(task, {}).get("status") != "pending":
                self._forget_task(task)
        return ""

    def _forget_task(self, task: str) -> None:
        self._db["task"].pop(task, None)
        self._task_session.pop(task, None)

    def _check_vm_op(self, vm: str, op: str) -> dict[str, Any]:
        """xapi's checks, in xapi's order: power state, template, snapshot, control domain."""
        r = self._get("VM", vm)
        if r["power_state"] not in _POWER_STATES[op]:
            expected = ", ".join(p.lower() for p in _POWER_STATES[op])
            raise XapiError("VM_BAD_POWER_STATE", vm, expected, r["power_state"].lower())
        if r["is_a_template"] and not r["is_a_snapshot"] and op not in _TEMPLATE_OPS:
            raise XapiError("VM_IS_TEMPLATE", vm, op)
        if r["is_a_snapshot"] and op not in _SNAPSHOT_OPS:
            raise XapiError("VM_IS_SNAPSHOT", vm, op)
        if op == "provision" and not r["is_a_template"]:
            raise XapiError("ONLY_PROVISION_TEMPLATE")
        if r["is_control_domain"] and op != "start":
            raise XapiError("OPERATION_NOT_ALLOWED",
                            "This operation is not allowed on a control domain")
        return r

    @_api("VM.clone")
    def _vm_clone(self, s: str, vm: str, new_name: str) -> str:
        r = self._check_vm_op(vm, "clone")
        metrics = NULL
        if self.stale_guest_metrics and r["guest_metrics"] in self._db["VM_guest_metrics"]:
            old = self._db["VM_guest_metrics"][r["guest_metrics"]]
            metrics = self._new("VM_guest_metrics", **{k: old[k] for k in _DEFAULTS[
                "VM_guest_metrics"]})
        fields = {k: r[k] for k in _DEFAULTS["VM"]} | dict(
            name_label=new_name, VBDs=[], VIFs=[], snapshots=[], is_a_snapshot=False,
            snapshot_of=NULL, snapshot_time=DateTime(_EPOCH), guest_metrics=metrics,
            current_operations={}, metrics=self._new("VM_metrics", install_time=_now()))
        clone = self._new("VM", **fields)
        for vif in r["VIFs"]:  # xapi copies the VIFs with fresh MACs
            self._new_vif(clone, self._db["VIF"][vif]["device"])
        for vbd in r["VBDs"]:
            b = self._db["VBD"][vbd]
            vdi = b["VDI"]
            if b["type"] == "Disk":  # xapi clones disks; CDs keep pointing at the same ISO
                v = self._db["VDI"][vdi]
                vdi = self._new_vdi(v["SR"], **{k: v[k] for k in _DEFAULTS["VDI"]
                                                if k not in ("SR", "VBDs")})
            self._new_vbd(clone, vdi, **{k: copy.deepcopy(b[k]) for k in (
                "type", "userdevice", "bootable", "mode", "other_config")})
        return clone

    @_api("VM.provision")
    def _vm_provision(self, s: str, vm: str) -> str:
        r = self._check_vm_op(vm, "provision")
        r["is_a_template"] = False  # xapi's first step: a failure below leaves a plain VM
        default_sr = self._db["pool"][self._pool]["default_SR"]
        plan = []
        for disk in ET.fromstring(r["other_config"].get("disks", "<provision/>")).iter("disk"):
            sr = self._by_uuid("SR", disk.get("sr")) if disk.get("sr") else default_sr
            if sr not in self._db["SR"]:
                raise XapiError("VM_REQUIRES_SR", vm, sr)
            plan.append((sr, disk.attrib))
        if self.storage_full is not None:  # the SR (or its SM backend) has no room
            raise XapiError(self.storage_full, *self._fault_args(self.storage_full,
                                                                  "VM.provision", [s, vm]))
        for sr, disk in plan:  # all checks first: a failed provision leaves no disk behind
            size = str(int(disk.get("size", "0")))
            vdi = self._new_vdi(sr, name_label=f"{r['name_label']} {disk.get('device', '0')}",
                                virtual_size=size, type=disk.get("type", "system"))
            self._new_vbd(vm, vdi, type="Disk", userdevice=disk.get("device", "0"),
                          bootable=disk.get("bootable") == "true",
                          other_config={"owner": "true"})  # the VM owns this disk
        r["other_config"].pop("disks", None)
        return ""

    @_api("VM.start")
    def _vm_start(self, s: str, vm: str, start_paused: bool, force: bool) -> str:
        r = self._check_vm_op(vm, "start")
        r.update(power_state="Paused" if start_paused else "Running", resident_on=self._host,
                 domid=str(1 + sum(self._boots.values())))
        for vbd in r["VBDs"]:
            self._db["VBD"][vbd]["currently_attached"] = True
        self._boots[vm] += 1
        if not start_paused:
            self._after(self.boot_seconds, self._guest_booted, vm, self._boots[vm])
        return ""

    def _guest_booted(self, vm: str, boot: int) -> None:
        """The guest agent reports in: fresh metrics, with the IP unless never_report_ip."""
        with self._lock:
            r = self._db["VM"].get(vm)
            if r is None or r["power_state"] != "Running" or self._boots[vm] != boot:
                return
            networks = {} if self.never_report_ip else _networks(self.guest_ip)
            self._booted[vm] = boot
            if r["guest_metrics"] in self._db["VM_guest_metrics"]:
                self._db["VM_guest_metrics"][r["guest_metrics"]].update(
                    networks=networks, last_updated=_now())
            else:
                r["guest_metrics"] = self._new("VM_guest_metrics", networks=networks,
                                               last_updated=_now())

    def _halt(self, vm: str, op: str) -> str:
        r = self._check_vm_op(vm, op)
        r.update(power_state="Halted", resident_on=NULL, domid="-1")
        for vbd in r["VBDs"]:
            self._db["VBD"][vbd]["currently_attached"] = False
        self._boots[vm] += 1  # a boot timer still pending for this VM must not fire
        return ""

    @_api("VM.hard_shutdown")
    def _vm_hard_shutdown(self, s: str, vm: str) -> str:
        return self._halt(vm, "hard_shutdown")

    @_api("VM.clean_shutdown")
    def _vm_clean_shutdown(self, s: str, vm: str) -> str:
        return self._halt(vm, "clean_shutdown")

    @_api("VM.destroy")
    def _vm_destroy(self, s: str, vm: str) -> str:
        r = self._check_vm_op(vm, "destroy")
        for vbd in r["VBDs"]:  # the VBDs go, the VDIs stay (like xapi)
            b = self._db["VBD"].pop(vbd)
            self._db["VDI"][b["VDI"]]["VBDs"].remove(vbd)
        for vif in r["VIFs"]:
            self._db["network"][self._db["VIF"].pop(vif)["network"]]["VIFs"].remove(vif)
        self._db["VM_guest_metrics"].pop(r["guest_metrics"], None)
        self._db["VM_metrics"].pop(r["metrics"], None)
        parent = self._db["VM"].get(r["snapshot_of"])
        if parent is not None:
            parent["snapshots"].remove(vm)
        del self._db["VM"][vm]
        return ""

    @_api("VDI.destroy")
    def _vdi_destroy(self, s: str, vdi: str) -> str:
        r = self._get("VDI", vdi)
        if r["VBDs"]:  # VM.destroy removes a VM's VBDs, so these belong to existing VMs
            raise XapiError("VDI_IN_USE", vdi, "destroy")
        self._db["SR"][r["SR"]]["VDIs"].remove(vdi)
        del self._db["VDI"][vdi]
        return ""

    @_api("task.destroy")
    def _task_destroy(self, s: str, task: str) -> str:
        self._get("task", task)
        self._forget_task(task)
        return ""

    @_api("task.cancel")
    def _task_cancel(self, s: str, task: str) -> str:
        r = self._get("task", task)
        if r["status"] == "pending":
            r.update(status="cancelled", error_info=["TASK_CANCELLED", task], finished=_now())
        return ""
