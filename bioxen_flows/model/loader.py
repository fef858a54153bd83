"""The one way a model is loaded: model text in, a ready libroadrunner instance out.

Compiling a model is what a cell's start costs; every cache that avoids it lives here:

- SBML: Antimony's translation of each model text (every VM of an organism shares one).
- Disk (`compiled_cache.py`): the compiled machine code of each model, per user and host,
  so a new process loads a model instead of compiling it.
- Keep-alive: one live instance of each recently loaded model; libroadrunner reuses the
  compiled code of a model while an instance of it is alive (with the disk cache off, a
  cell with packages then rebuilds without a compile).
- Balanced state: the species amounts of each organism's cell in balanced growth, where
  new cells start (its model instance is kept alive with it).

What each saves is measured by `bench/engine.py` (build warm, cold, in a fresh process
with and without the disk cache) and `bench/state.py` (warm and cold cell loads); this
module quotes no timings.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Any

from bioxen_flows.errors import InputError
from bioxen_flows.model.builder import MODEL_NAME, build_model_text
from bioxen_flows.organisms.profiles import get_profile

BALANCED_GROWTH_MIN = 1e5  # simulated minutes that bring any profile to balanced growth
KEEP_ALIVE = 16  # recently loaded models kept alive (a few MB each)
# libAntimony keeps global state: one caller at a time (here and in `modules.py`).
ANTIMONY_LOCK = threading.Lock()

_lock = threading.Lock()
_alive: OrderedDict[str, Any] = OrderedDict()  # model text -> a live RoadRunner
_balanced: dict[str, tuple[dict[str, float], Any]] = {}  # organism -> (amounts, instance)


@lru_cache(maxsize=64)
def antimony_to_sbml(text: str) -> str:
    """Antimony → SBML (cached: every VM of an organism shares its model text)."""
    import antimony

    with ANTIMONY_LOCK:
        antimony.clearPreviousLoads()
        if antimony.loadAntimonyString(text) < 0:
            raise InputError(f"model text does not compile: {antimony.getLastError().strip()}")
        return antimony.getSBMLString(MODEL_NAME)


def load_roadrunner(text: str) -> Any:  # -> roadrunner.RoadRunner (lazy import)
    """A fresh RoadRunner instance for the model text: from the disk cache when this user
    compiled it before on this host, else compiled (and kept there); kept alive.

    Always the disk cache when it is on: libroadrunner's own reuse of compiled code knows
    only instances it compiled itself, so after a load from the cache the next compile of
    the same text would be a full one, once per model in every worker."""
    import roadrunner

    from bioxen_flows.logs import quiet_numerical_libraries
    from bioxen_flows.model import compiled_cache

    quiet_numerical_libraries()

    def compile_model() -> Any:  # -> roadrunner.RoadRunner
        return roadrunner.RoadRunner(antimony_to_sbml(text))

    rr = compiled_cache.load_or_compile(text, compile_model)
    with _lock:
        _alive[text] = rr
        _alive.move_to_end(text)
        while len(_alive) > KEEP_ALIVE:
            _alive.popitem(last=False)
    return rr


def balanced_growth_state(biological_type: str) -> dict[str, float]:
    """Species amounts of an uncapped cell in balanced growth (ODE), where VMs start."""
    with _lock:
        known = _balanced.get(biological_type)
    if known is None:
        rr = load_roadrunner(build_model_text(get_profile(biological_type).parameters))
        rr.simulate(0, BALANCED_GROWTH_MIN, 2)
        ids = rr.model.getFloatingSpeciesIds()
        amounts = dict(zip(ids, map(float, rr.model.getFloatingSpeciesAmounts()), strict=True))
        # the instance stays alive with its state: every later cell of the organism loads
        # its model without a compile, however many other models pass through
        known = (amounts, rr)
        with _lock:
            known = _balanced.setdefault(biological_type, known)
    return dict(known[0])


def forget(*, texts: bool = True, instances: bool = True) -> None:
    """Drop what this process remembers (the disk cache stays): SBML and balanced states
    (`texts`), live instances (`instances`). For benches that time a cold start."""
    with _lock:
        if texts:
            antimony_to_sbml.cache_clear()
            _balanced.clear()
        if instances:
            _alive.clear()
