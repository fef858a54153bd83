"""The budget ledger: the host budget, owners' quotas, and what live VMs hold.

An *owner* here is always a quota user (a user or project whose quota a VM counts
against), never a flow run. Every function takes the caller's connection: a change that
allocates checks the ledger in its own transaction, holding the ledger lock (the budget
row ``FOR UPDATE`` on PostgreSQL; SQLite's write transaction holds the whole database), so
the host budget and quotas hold across processes and machines.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select

from bioxen_flows.errors import BudgetError
from bioxen_flows.limits import OWNER
from bioxen_flows.state.schema import Damage, budget, quotas, vms
from bioxen_flows.validation import check_int, check_name, check_number

MAX_QUOTA_VMS = 10**6  # live VMs one owner's quota may allow
MAX_RIBOSOMES = 10**12  # a host budget or an owner's quota, in ribosomes
MAX_ATP_PERCENT = 1e9  # a host budget or an owner's quota, in % of one cell's maximum
MIN_ATP_BUDGET = 1e-9  # a host budget of no energy at all is refused
_SLACK = 1e-9  # floating-point tolerance on ATP sums


def check_owner(owner: str) -> str:
    """An owner (a quota user): 1-64 of A-Z a-z 0-9 _ . - (it appears in messages and
    quotas)."""
    return check_name("owner", owner, OWNER, "1-64 characters from A-Z a-z 0-9 _ . -")


# ---- reading --------------------------------------------------------------------------------
def usage(conn: Connection, *, lock: bool = False, exclude: str | None = None
          ) -> tuple[Any, Any]:
    """The budget row and the (ribosomes, ATP %) live VMs hold (but ``exclude``).
    ``lock`` takes the budget row's lock on PostgreSQL, which serializes every ledger
    change; SQLite's write transaction already holds the whole database."""
    query = select(budget).where(budget.c.id == 1)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    limits = conn.execute(query).first()
    if limits is None:
        raise Damage("it has no host budget row")
    used = select(func.coalesce(func.sum(vms.c.ribosomes), 0),
                  func.coalesce(func.sum(vms.c.atp_percent), 0.0))
    if exclude is not None:
        used = used.where(vms.c.vm_id != exclude)
    return limits, conn.execute(used).one()


def host_budget(conn: Connection) -> dict[str, float]:
    """The host budget, what live VMs hold, and what is left (ribosomes; ATP in % of one
    cell's maximum)."""
    limits, used = usage(conn)
    return {
        "ribosome_budget": int(limits.ribosomes),
        "ribosomes_allocated": int(used[0]),
        "ribosomes_available": int(limits.ribosomes - used[0]),
        "atp_budget_percent": float(limits.atp_percent),
        "atp_percent_allocated": float(used[1]),
        "atp_percent_available": float(limits.atp_percent - used[1]),
    }


def quota_table(conn: Connection) -> list[dict[str, Any]]:
    """Every owner (quota user) with a quota or a live VM: limits (None: unlimited) and
    use."""
    use = (select(vms.c.owner, func.count().label("n"),
                  func.coalesce(func.sum(vms.c.ribosomes), 0).label("ribosomes"),
                  func.coalesce(func.sum(vms.c.atp_percent), 0.0).label("atp"))
           .where(vms.c.owner.is_not(None)).group_by(vms.c.owner))
    used = {row.owner: row for row in conn.execute(use)}
    limits = {row.owner: row for row in conn.execute(select(quotas))}
    rows = []
    for owner in sorted(set(used) | set(limits)):
        limit, u = limits.get(owner), used.get(owner)
        rows.append({
            "owner": owner,
            "vms": int(u.n) if u else 0,
            "vms_limit": limit.vms if limit else None,
            "ribosomes": int(u.ribosomes) if u else 0,
            "ribosomes_limit": limit.ribosomes if limit else None,
            "atp_percent": float(u.atp) if u else 0.0,
            "atp_percent_limit": limit.atp_percent if limit else None,
        })
    return rows


def quota_of(conn: Connection, owner: str) -> dict[str, Any]:
    """One owner's row of `quota_table` (no limits, no use when it has neither)."""
    return next((q for q in quota_table(conn) if q["owner"] == owner),
                {"owner": owner, "vms_limit": None, "ribosomes_limit": None,
                 "atp_percent_limit": None})


# ---- checking an allocation -----------------------------------------------------------------
def check_allocation(conn: Connection, vm_id: str, owner: str | None, allocations: dict,
                     *, new: bool) -> None:
    """Refuse (`BudgetError`) a new VM or allocations that would exceed the host budget or
    its owner's (quota user's) quota; takes the ledger lock for the caller's
    transaction."""
    limits, used = usage(conn, lock=True, exclude=vm_id)
    _check_budget(limits, used, allocations)
    if owner is not None:
        _check_quota(conn, vm_id, owner, allocations, new=new)


def _check_budget(limits: Any, used: Any, allocations: dict) -> None:
    ribosomes = allocations.get("ribosomes")
    if ribosomes is not None and used[0] + ribosomes > limits.ribosomes:
        raise BudgetError(
            f"ribosome allocation of {ribosomes} exceeds the host budget: "
            f"{limits.ribosomes - used[0]} of {limits.ribosomes} available"
        )
    atp = allocations.get("atp_percent")
    if atp is not None and used[1] + atp > limits.atp_percent + _SLACK:
        raise BudgetError(
            f"ATP allocation of {atp:g} % exceeds the host budget: "
            f"{limits.atp_percent - used[1]:g} % of {limits.atp_percent:g} % available"
        )


def _check_quota(conn: Connection, vm_id: str, owner: str, allocations: dict, *,
                 new: bool) -> None:
    quota = conn.execute(select(quotas).where(quotas.c.owner == owner)).first()
    if quota is None:
        return
    count, ribosomes, atp = conn.execute(
        select(func.count(), func.coalesce(func.sum(vms.c.ribosomes), 0),
               func.coalesce(func.sum(vms.c.atp_percent), 0.0))
        .where(vms.c.owner == owner).where(vms.c.vm_id != vm_id)).one()
    fix = f"raise it with `bioxen quota set --owner {owner} ...` or free some"
    if new and quota.vms is not None and count + 1 > quota.vms:
        raise BudgetError(f"owner {owner!r} is at its quota of {quota.vms} live VMs "
                          f"({count} in use); {fix}")
    wanted = allocations.get("ribosomes")
    if wanted is not None and quota.ribosomes is not None \
            and ribosomes + wanted > quota.ribosomes:
        raise BudgetError(f"ribosome allocation of {wanted} exceeds owner {owner!r}'s quota "
                          f"of {quota.ribosomes} ({ribosomes} in use); {fix}")
    wanted = allocations.get("atp_percent")
    if wanted is not None and quota.atp_percent is not None \
            and atp + wanted > quota.atp_percent + _SLACK:
        raise BudgetError(f"ATP allocation of {wanted:g} % exceeds owner {owner!r}'s quota "
                          f"of {quota.atp_percent:g} % ({atp:g} % in use); {fix}")


# ---- changing limits ------------------------------------------------------------------------
# (low, high) of each limit, whoever sets it: `set_quota`, `set_budget`, a restored row
QUOTA_BOUNDS: dict[str, tuple[float, float]] = {
    "vms": (0, MAX_QUOTA_VMS), "ribosomes": (0, MAX_RIBOSOMES),
    "atp_percent": (0, MAX_ATP_PERCENT)}
BUDGET_BOUNDS: dict[str, tuple[float, float]] = {
    "ribosomes": (1, MAX_RIBOSOMES), "atp_percent": (MIN_ATP_BUDGET, MAX_ATP_PERCENT)}
_WHAT = {"vms": "VM", "ribosomes": "ribosome", "atp_percent": "ATP"}


def _check_limits(kind: str, bounds: dict[str, tuple[float, float]],
                  values: dict[str, Any]) -> None:
    for name, value in values.items():
        if value is None:
            continue
        low, high = bounds[name]
        label = f"{_WHAT[name]} {kind}"
        if name == "atp_percent":
            check_number(label, value, low, high)
        else:
            check_int(label, value, int(low), int(high))


def set_quota(conn: Connection, owner: str, *, vms_limit: int | None = None,
              ribosomes: int | None = None, atp_percent: float | None = None,
              clear: bool = False) -> None:
    """Set (or with ``clear`` remove) an owner's limits; unspecified limits stay as they
    are. A limit below current use stops new VMs and allocations, nothing is destroyed."""
    check_owner(owner)
    _check_limits("quota", QUOTA_BOUNDS,
                  {"vms": vms_limit, "ribosomes": ribosomes, "atp_percent": atp_percent})
    if clear:
        conn.execute(quotas.delete().where(quotas.c.owner == owner))
        return
    values = {"vms": vms_limit, "ribosomes": ribosomes,
              "atp_percent": None if atp_percent is None else float(atp_percent)}
    values = {k: v for k, v in values.items() if v is not None}
    current = conn.execute(select(quotas.c.owner).where(quotas.c.owner == owner)).first()
    if current is None:
        conn.execute(quotas.insert().values(owner=owner, **values))
    elif values:
        conn.execute(quotas.update().where(quotas.c.owner == owner).values(**values))


def set_budget(conn: Connection, ribosomes: int | None = None,
               atp_percent: float | None = None) -> dict[str, Any]:
    """Change the host budget (holding the ledger lock); refused below what live VMs
    already hold. Returns what changed."""
    _check_limits("budget", BUDGET_BOUNDS, {"ribosomes": ribosomes, "atp_percent": atp_percent})
    _, used = usage(conn, lock=True)
    changes: dict[str, Any] = {}
    if ribosomes is not None:
        if ribosomes < used[0]:
            raise BudgetError(f"ribosome budget {ribosomes} is below the {used[0]} "
                              "ribosomes live VMs hold; free some first")
        changes["ribosomes"] = ribosomes
    if atp_percent is not None:
        if atp_percent < used[1] - _SLACK:
            raise BudgetError(f"ATP budget {atp_percent:g} % is below the {used[1]:g} % "
                              "live VMs hold; free some first")
        changes["atp_percent"] = float(atp_percent)
    if changes:
        conn.execute(budget.update().where(budget.c.id == 1).values(**changes))
    return changes
