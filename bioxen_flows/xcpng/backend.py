"""XCP-ng provisioning, teardown and reaping for bio-VMs, on top of the XAPI client.

One session per call (sessions are not shared across threads or tasks). The pool's
settings arrive as an `xcpng_config` mapping and are read through the typed `XCPngConfig`
once, here, so their defaults live in one place.

Ownership: this installation (`StateStore().installation_id()`) owns exactly the VMs named
`bioxen-<installation>-...` at clone time and tagged with its id right after, and the
disks tagged with its id. Teardown and the reaper touch nothing else; the reaper leaves
anything younger than a minimum age alone (it may be a clone being tagged right now).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import XenAPI

from bioxen_flows.errors import InfrastructureError, InputError, XapiError
from bioxen_flows.xcpng import xapi
from bioxen_flows.xcpng.placement import Placement

if TYPE_CHECKING:
    from bioxen_flows.config.models import XCPngConfig

log = logging.getLogger(__name__)


def pool_config(cfg: Mapping[str, Any] | XCPngConfig) -> XCPngConfig:
    """The typed pool settings (defaults from `XCPngConfig` only); bad ones are InputError."""
    from pydantic import ValidationError

    from bioxen_flows.config.models import XCPngConfig

    if isinstance(cfg, XCPngConfig):
        return cfg
    try:
        return XCPngConfig.model_validate(dict(cfg))
    except ValidationError as exc:
        raise InputError(f"invalid xcpng_config: {exc.errors()[0]['msg']}") from None


def gc_min_age_seconds() -> float:
    """How old a leftover must be before the reaper destroys it: the `gc_min_age_seconds`
    setting (BIOXEN_GC_MIN_AGE_SECONDS), shared with the basic-VM gc."""
    from bioxen_flows.settings import get_settings

    return get_settings().gc_min_age_seconds


def xapi_password(cfg: XCPngConfig) -> str:
    """The XAPI password from a Prefect Secret block or the environment; never from config."""
    if cfg.password_secret_block:
        from prefect.blocks.system import Secret

        return str(Secret.load(cfg.password_secret_block).get())
    password = os.environ.get(cfg.password_env)
    if not password:
        raise InputError(
            f"no XCP-ng password: set the environment variable {cfg.password_env} "
            "or name a Prefect Secret block in xcpng_config.password_secret_block"
        )
    return password


@contextmanager
def session(cfg: Mapping[str, Any] | XCPngConfig) -> Iterator[Any]:
    """A logged-in XAPI session, from the named `XCPngCredentials` block or the config."""
    cfg = pool_config(cfg)
    if cfg.credentials_block:
        from bioxen_flows.xcpng.credentials import XCPngCredentials

        with XCPngCredentials.load(cfg.credentials_block).get_session() as x:
            yield x
        return
    assert cfg.url is not None and cfg.username is not None  # XCPngConfig checks it
    endpoint = xapi.XapiEndpoint(url=cfg.url, username=cfg.username, ca_file=cfg.ca_file,
                                 ignore_ssl=cfg.ignore_ssl)
    with xapi.xapi_session(endpoint, xapi_password(cfg)) as x:
        yield x


def installation_id() -> str:
    from bioxen_flows.state import StateStore

    return StateStore().installation_id()


# ---- provisioning ----------------------------------------------------------------------

def clone_and_tag(
    cfg: Mapping[str, Any] | XCPngConfig, vm_id: str, owner: str,
    before_clone: Callable[[], None] | None = None,
) -> str:
    """Template → clone (named for this installation) → tags; returns the new VM's ref.

    `before_clone` is called just before the pool is asked to clone: a failure before it
    (no password, the pool unreachable, no template) left nothing on the pool.
    If tagging fails the fresh clone is destroyed here, so a retry does not leave an
    untagged clone behind; should that fail too, its name still lets the reaper find it."""
    cfg = pool_config(cfg)
    installation = installation_id()
    with session(cfg) as x:
        template = xapi.find_template(x, cfg.template)
        if before_clone is not None:
            before_clone()
        vm = xapi.clone_template(x, template, xapi.vm_name(installation, vm_id),
                                 cfg.task_timeout_seconds)
        tags = xapi.new_tags(vm_id, owner, installation)
        try:
            xapi.describe_and_tag(x, vm, f"BioXen bio-VM {vm_id}", tags)
        except BaseException:
            _discard(x, vm, tags)
            raise
        _discard_twins(x, vm, tags)
        return vm


def _discard_twins(x: Any, vm: str, tags: dict[str, str]) -> None:
    """Destroy untagged clones of the same name: xmlrpc.client resends a call once when the
    connection drops, so a clone whose answer was lost may exist next to ours."""
    with xapi.xapi_errors("looking for twin clones"):
        twins = [ref for ref in x.VM.get_by_name_label(x.VM.get_name_label(vm))
                 if ref != vm and not xapi.tags_of(x, ref)]
    for twin in twins:
        log.info("destroying an untagged twin clone of %s", tags["vm_id"])
        _discard(x, twin, tags)


def _discard(x: Any, vm: str, tags: dict[str, str]) -> None:
    try:
        xapi.teardown_vm(x, vm, tags)
    except Exception as exc:  # the reaper finds it by its name
        log.warning("could not discard the untagged clone %s: %s", vm, exc)


def provision(cfg: Mapping[str, Any] | XCPngConfig, vm: str) -> None:
    cfg = pool_config(cfg)
    with session(cfg) as x:
        xapi.fix_disks_sr(x, vm)
        xapi.provision_disks(x, vm, cfg.task_timeout_seconds)


def boot(cfg: Mapping[str, Any] | XCPngConfig, vm: str) -> Placement:
    """Start the VM and wait for its guest IP; returns the placement to record."""
    cfg = pool_config(cfg)
    with session(cfg) as x:
        marker = xapi.start_vm(x, vm)
        ip = xapi.wait_for_ip(x, vm, marker, timeout=cfg.boot_timeout_seconds)
        with xapi.xapi_errors("reading the VM's uuid"):
            uuid = x.VM.get_uuid(vm)
    return Placement(vm_ref=vm, vm_uuid=uuid, ip=ip)


def provision_vm(
    cfg: Mapping[str, Any] | XCPngConfig, vm_id: str, owner: str,
    before_clone: Callable[[], None] | None = None,
) -> Placement:
    """All provisioning steps in order (the Prefect flow runs them as separate tasks)."""
    started = time.monotonic()
    vm = clone_and_tag(cfg, vm_id, owner, before_clone)
    provision(cfg, vm)
    placement = boot(cfg, vm)
    log.info("provisioned XCP-ng VM for %s at %s in %.1fs", vm_id, placement.ip,
             time.monotonic() - started)
    return placement


# ---- teardown ----------------------------------------------------------------------------

def destroy_vm(cfg: Mapping[str, Any] | XCPngConfig, vm_uuid: str, vm_id: str) -> list[str]:
    """Tear a VM down by uuid; a VM that is already gone is not an error. A VM that does not
    carry this installation's BioXen tag for `vm_id` (a template, another installation's VM,
    anything a record was made to point at) is refused and left untouched."""
    with session(cfg) as x:
        with xapi.xapi_errors(f"looking up VM {vm_uuid}"):
            try:
                vm = x.VM.get_by_uuid(vm_uuid)
            except XenAPI.Failure as failure:  # only these two mean "already gone"
                if xapi.failure_code(failure) not in xapi.GONE_CODES:
                    raise
                log.info("XCP-ng VM %s already gone", vm_uuid)
                return []
        tags = xapi.tags_of(x, vm)
        if tags.get("installation") != installation_id() or tags.get("vm_id") != vm_id:
            raise InfrastructureError(
                f"refusing to destroy XCP-ng VM {vm_uuid}: it does not carry this "
                f"installation's BioXen tag for {vm_id!r}"
            )
        return xapi.teardown_vm(x, vm)


# ---- the reaper ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Leftover:
    """Something of this installation's on the pool, and what the reaper decided about it."""

    kind: str  # "VM" or "VDI"
    ref: str
    name: str
    vm_id: str
    owner: str
    age_seconds: float | None
    reason: str  # why it goes, or why it stays
    destroy: bool

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "vm_id": self.vm_id, "owner": self.owner,
                "age_seconds": None if self.age_seconds is None else round(self.age_seconds),
                "action": "destroy" if self.destroy else "keep", "reason": self.reason}


RECORD = "record"  # a Leftover's kind when it is a bio-VM record in the store, not on the pool

# keep(tags) -> a reason to keep the thing, or None to let it go
KeepReason = Callable[[dict[str, str]], "str | None"]


def find_leftovers(
    cfg: Mapping[str, Any] | XCPngConfig, keep: KeepReason, min_age_seconds: float,
    doomed: KeepReason | None = None,
) -> list[Leftover]:
    """Every VM and orphaned disk of this installation on the pool, each with a verdict.

    Ours: a VM or VDI tagged with this installation's id, or an untagged VM whose name
    carries its prefix (a clone whose tagging failed). Another installation's things are
    not even listed. `doomed(tags)` names a reason to destroy a thing at any age (its owner
    is known to be gone for good, e.g. the creator of its bio-VM record was killed)."""
    installation = installation_id()
    prefix = xapi.name_prefix(installation)
    now = dt.datetime.now(dt.timezone.utc)
    found: list[Leftover] = []
    with session(cfg) as x:
        for ref, record in xapi.vm_records(x).items():
            tags = xapi.tags_in(record)
            if tags:
                if tags.get("installation") != installation:
                    continue
                born = xapi.parse_xapi_time(tags.get("created_at", ""))
            elif record["name_label"].startswith(prefix):
                tags = {"vm_id": record["name_label"][len(prefix):], "owner": ""}
                born = xapi.install_time(x, record)
            else:
                continue
            found.append(_verdict("VM", ref, record["name_label"], tags, born, now,
                                  keep, min_age_seconds, doomed))
        for ref, record in xapi.vdi_records(x).items():
            tags = xapi.tags_in(record)
            if tags.get("installation") != installation or record["VBDs"]:
                continue  # not ours, or still attached to a VM (which is judged above)
            found.append(_verdict("VDI", ref, record["name_label"], tags,
                                  xapi.parse_xapi_time(tags.get("created_at", "")), now,
                                  keep, min_age_seconds, doomed))
    return found


def _verdict(
    kind: str, ref: str, name: str, tags: dict[str, str], born: dt.datetime | None,
    now: dt.datetime, keep: KeepReason, min_age_seconds: float,
    doomed: KeepReason | None = None,
) -> Leftover:
    age = None if born is None else (now - born).total_seconds()
    gone_for_good = doomed(tags) if doomed is not None else None
    if gone_for_good:
        return Leftover(kind=kind, ref=ref, name=name, vm_id=tags.get("vm_id", ""),
                        owner=tags.get("owner", ""), age_seconds=age, reason=gone_for_good,
                        destroy=True)
    reason = keep(tags)
    if reason is None and age is not None and age < min_age_seconds:
        reason = f"younger than the minimum age ({age:.0f} s < {min_age_seconds:g} s)"
    destroy = reason is None
    if destroy:
        untagged = "untagged clone, " if kind == "VM" and "installation" not in tags else ""
        orphan = "disk of no VM, " if kind == "VDI" else ""
        reason = f"{untagged}{orphan}owner {tags.get('owner') or 'unknown'} is gone"
    return Leftover(kind=kind, ref=ref, name=name, vm_id=tags.get("vm_id", ""),
                    owner=tags.get("owner", ""), age_seconds=age, reason=str(reason),
                    destroy=destroy)


def destroy_leftovers(cfg: Mapping[str, Any] | XCPngConfig, leftovers: list[Leftover]) -> list[str]:
    """Destroy the leftovers marked `destroy` (VMs with their disks, then orphaned disks,
    then the store records of interrupted creations: a record goes only after its pool
    objects did); returns the names of what was destroyed. Something already gone counts
    as destroyed."""
    destroyed = []
    with session(cfg) as x:
        for item in leftovers:
            if not item.destroy or item.kind == RECORD:
                continue
            try:
                if item.kind == "VM":
                    xapi.teardown_vm(x, item.ref)
                else:
                    with xapi.xapi_errors(f"destroying disk {item.name}"):
                        xapi.destroy_vdi(x, item.ref)
            except XapiError as exc:  # destroyed meanwhile (by its own flow's teardown)
                if exc.code not in xapi.GONE_CODES:
                    raise
            destroyed.append(item.name)
    for item in leftovers:
        if item.destroy and item.kind == RECORD:
            _forget_record(item.vm_id, item.reason)
            destroyed.append(item.name)
    return destroyed


def _forget_record(vm_id: str, reason: str) -> None:
    """Remove an interrupted creation's record (its allocation returns to the budget),
    audited as ``gc``; one that finished or went meanwhile is left alone."""
    from bioxen_flows.state import StateStore

    store = StateStore()
    if vm_id in {r.vm_id for r in store.interrupted_creations()}:
        store.delete_vm(vm_id, force=True, action="gc", detail={"reason": reason})


def reap_vms(
    cfg: Mapping[str, Any] | XCPngConfig, keep: Callable[[dict[str, str]], bool],
    min_age_seconds: float = 0.0,
) -> list[str]:
    """Destroy this installation's VMs and orphaned disks for which `keep(tags)` is False
    (a flow's or a record's own cleanup: no minimum age); returns their vm_ids."""
    leftovers = find_leftovers(cfg, lambda tags: "kept" if keep(tags) else None, min_age_seconds)
    destroy_leftovers(cfg, leftovers)
    return [item.vm_id for item in leftovers if item.destroy and item.kind == "VM"]
