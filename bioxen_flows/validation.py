"""The one way input is checked against a bound or a name pattern.

Each helper raises `InputError` with a message that names the field, the bound and what
was given, so every entry point refuses bad input in the same words.
"""

from __future__ import annotations

import math
import re
from typing import Any

from bioxen_flows.errors import InputError


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in [low, high]; bools, floats and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{name} must be a whole number from {low:,} to {high:,}, "
                         f"got {_shown(value)}")
    return value


def check_number(name: str, value: Any, low: float, high: float, *,
                 low_open: bool = False) -> float:
    """``value`` as a finite float in [low, high] (or (low, high] with ``low_open``)."""
    ok = (not isinstance(value, bool) and isinstance(value, (int, float))
          and math.isfinite(value) and (low < value if low_open else low <= value)
          and value <= high)
    if not ok:
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise InputError(f"{name} must be {bound} and <= {high:g}, got {_shown(value)}")
    return float(value)


def check_name(name: str, value: Any, pattern: re.Pattern[str], what: str) -> str:
    """``value`` as a string matching ``pattern`` in full; ``what`` says what is allowed."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InputError(f"{name} must be {what}, got {_shown(value)}")
    return value
