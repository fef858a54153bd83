"""`bioxen doctor`: is this installation able to do its job? Each check says what it
tried and, when it fails, why — the first thing to run on a new machine or after an upgrade."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bioxen_flows.errors import CheckFailed, StoreError
from bioxen_flows.orchestration.api_health import check_prefect_api
from bioxen_flows.settings import get_settings

# Weiße et al. 2015's published E. coli steady state (docs/model.md): what the engine must give
REFERENCE_ECOLI = {"growth_rate_per_min": (0.02411, 1e-3), "ribosomes_total": (3190.0, 0.01)}
MIN_FREE_DISK_BYTES = 1 << 30  # results of a long comparison take hundreds of MiB


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0


def check_engine() -> str:
    from bioxen_flows.engine.cell import Cell

    cell = Cell("ecoli")
    cell.grow(1e5, points=2)
    metrics = cell.metrics()
    parts = []
    for key, (expected, rel) in REFERENCE_ECOLI.items():
        got = float(metrics[key])
        if abs(got - expected) > rel * expected:
            raise CheckFailed(f"E. coli {key} is {got:.5g}, the reference is {expected:.5g} "
                               f"(±{rel:.1%}): the model or libroadrunner is broken")
        parts.append(f"{key} {got:.5g} (reference {expected:.5g})")
    return "E. coli steady state reproduced: " + ", ".join(parts)


def check_store() -> str:
    from bioxen_flows.state import StateStore
    from bioxen_flows.state.schema import SCHEMA_VERSION

    store = StateStore()  # opening brings an older schema up to date
    version = store.schema_version()
    if version != SCHEMA_VERSION:
        raise StoreError(f"{store.display_url} is at schema {version}, this BioXen needs "
                           f"{SCHEMA_VERSION}: run `bioxen db upgrade`")
    return f"{store.display_url}: schema {version}, {len(store.list_vms())} VM(s)"


def check_xcpng(cfg: dict[str, Any]) -> str:
    """Log in to the pool the config names, by URL or through a saved credentials block."""
    from bioxen_flows.xcpng import backend

    pool = backend.pool_config(cfg)
    with backend.session(pool) as xapi:
        hosts = len(xapi.host.get_all())
    where = pool.url or f"credentials block {pool.credentials_block!r}"
    return f"XCP-ng pool at {where} answers ({hosts} host(s))"


def check_disk() -> str:
    home = get_settings().home
    probe = home if home.exists() else next(p for p in home.parents if p.exists())
    free = shutil.disk_usage(probe).free
    if free < MIN_FREE_DISK_BYTES:
        raise CheckFailed(f"only {free / 2**20:.0f} MiB free under {home} "
                           f"(need {MIN_FREE_DISK_BYTES / 2**30:.0f} GiB)")
    return f"{free / 2**30:.1f} GiB free under {home}"


def run_checks(xcpng_config: dict[str, Any] | None = None) -> list[Check]:
    """Every check, each isolated: one failing never hides the others."""
    checks: list[tuple[str, Callable[[], str]]] = [
        ("engine", check_engine), ("store", check_store), ("prefect", check_prefect_api),
        ("disk", check_disk),
    ]
    if xcpng_config is not None:
        checks.append(("xcpng", lambda: check_xcpng(xcpng_config)))
    results = []
    for name, check in checks:
        started = time.perf_counter()
        try:
            results.append(Check(name, True, check()))
        except Exception as exc:  # a health check reports every failure, it never raises
            from bioxen_flows.redaction import redact

            text = redact(str(exc)).strip().splitlines()  # a driver may echo the URL
            results.append(Check(name, False, text[0] if text else type(exc).__name__))
        results[-1].seconds = round(time.perf_counter() - started, 3)
    return results


def as_dicts(checks: list[Check]) -> list[dict[str, Any]]:
    return [asdict(check) for check in checks]
