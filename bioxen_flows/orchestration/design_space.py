"""A design space to sweep: axes from the command line, and the points (VMs) they span.

Pure data, no Prefect: the CLI checks a sweep here before any server starts.
Axes are lists (`0.25,1,4`) or ranges (`0.1:10:log8` — 8 values evenly spaced on a log
scale; `1:20:lin5` or `1:20:5` — 5 evenly spaced values).
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from bioxen_flows.errors import InputError
from bioxen_flows.limits import (
    MAX_COPIES,
    MAX_HOURS,
    MAX_NUTRIENT,
    MAX_REPLICATES,
    MAX_SEED,
    MAX_STOCHASTIC_SWEEP_HOURS,
    MAX_STRENGTH,
)
from bioxen_flows.organisms.profiles import get_supported_biological_types

MAX_AXIS_VALUES = 50
MAX_POINTS = 5_000  # points of one sweep, controls included
_RANGE = re.compile(r"^\s*([^:]+):([^:]+):(log|lin)?(\d+)\s*$")


def parse_axis(text: str, name: str, *, integer: bool = False) -> list[float]:
    """`0.25,1,4`, `0.1:10:log8` or `1:20:lin5` -> sorted distinct values (one line on error)."""
    match = _RANGE.match(text)
    try:
        if match:
            low, high, n = float(match[1]), float(match[2]), int(match[4])
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(
            f"--{name} {text!r}: give numbers separated by commas (0.25,1,4) or a range "
            "LOW:HIGH:logN / LOW:HIGH:linN (0.1:10:log8)"
        ) from None
    if match:
        if not (math.isfinite(low) and math.isfinite(high)):
            raise InputError(f"--{name} {text!r}: values must be finite numbers")
        if not 1 <= n <= MAX_AXIS_VALUES:
            raise InputError(f"--{name} {text!r}: give 1 to {MAX_AXIS_VALUES} values")
        if match[3] == "log" and (low <= 0 or high <= 0):
            raise InputError(f"--{name} {text!r}: a log range needs bounds > 0")
        spaced = np.geomspace if match[3] == "log" else np.linspace
        with np.errstate(all="ignore"):  # an overflow is refused below, not warned about
            values = spaced(low, high, n).tolist()
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"--{name} {text!r}: values must be finite numbers")
    if integer and not match and any(v != round(v) for v in values):
        raise InputError(f"--{name} {text!r}: give whole numbers")
    if integer:  # a range's evenly spaced values are rounded to whole numbers
        values = [float(round(v)) for v in values]
    values = sorted({round(v, 12) for v in values})
    if not values or len(values) > MAX_AXIS_VALUES:
        raise InputError(f"--{name} {text!r}: give 1 to {MAX_AXIS_VALUES} values")
    return values


def design_points(
    organisms: list[str],
    package: str,
    strengths: list[float],
    copies: list[int],
    nutrients: list[float | None],
    replicates: int,
    seed: int | None,
    hours: float,
) -> list[dict[str, Any]]:
    """Every point of the space (one VM each) plus one control per organism and nutrient.

    A point is JSON-ready and holds only what determines its result (no VM id, no run):
    it is also the task's cache key material. With a seed, replicate r uses seed + r. A bad
    space is refused here, before any VM (or a Prefect server) is started.
    """
    known = get_supported_biological_types()
    if not organisms or any(o not in known for o in organisms):
        raise InputError(f"organisms must be among {', '.join(known)}; got {organisms}")
    if len(set(organisms)) != len(organisms):
        raise InputError(f"each organism once, got {organisms}")
    if not strengths or any(not 0 < s <= MAX_STRENGTH for s in strengths):
        raise InputError(f"strengths must be > 0 and <= {MAX_STRENGTH:g}, got {strengths}")
    if not copies or any(int(c) != c or not 1 <= c <= MAX_COPIES for c in copies):
        raise InputError(f"copies must be whole numbers from 1 to {MAX_COPIES}, got {copies}")
    if not nutrients or any(n is not None and not 0 <= n <= MAX_NUTRIENT for n in nutrients):
        raise InputError(f"nutrient levels must be between 0 and {MAX_NUTRIENT:g} molecules, "
                         f"got {nutrients}")
    if not 1 <= replicates <= MAX_REPLICATES:
        raise InputError(f"replicates must be between 1 and {MAX_REPLICATES}, got {replicates}")
    if replicates > 1 and seed is None:
        raise InputError("replicates differ only in stochastic mode: give a seed with them")
    if seed is not None and not 0 <= seed <= MAX_SEED - replicates:
        raise InputError(f"seed must be an integer from 0 to 2**63-1, got {seed}")
    if seed is not None and hours > MAX_STOCHASTIC_SWEEP_HOURS:
        raise InputError("a stochastic (seeded) sweep grows at most "
                         f"{MAX_STOCHASTIC_SWEEP_HOURS:g} h per cell")
    if not 0 < hours <= MAX_HOURS:
        raise InputError(f"hours must be > 0 and <= {MAX_HOURS:g}, got {hours}")
    total = len(organisms) * len(nutrients) * (1 + len(strengths) * len(copies) * replicates)
    if total > MAX_POINTS:
        raise InputError(f"the sweep has {total:,} points (controls included); the limit is "
                         f"{MAX_POINTS:,}")
    points = []
    for organism in organisms:
        for nutrient in nutrients:
            base = {"organism": organism, "nutrient": nutrient, "hours": float(hours)}
            points.append({**base, "role": "control", "package": None, "strength": None,
                           "copies": None, "replicate": 0, "seed": seed})
            for strength in strengths:
                for n_copies in copies:
                    for rep in range(replicates):
                        points.append({
                            **base, "role": "cell", "package": package,
                            "strength": float(strength), "copies": int(n_copies),
                            "replicate": rep, "seed": None if seed is None else seed + rep,
                        })
    return points
