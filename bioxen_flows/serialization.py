"""JSON-ready values: a cell that does not grow has an infinite doubling time; JSON has no inf."""

from __future__ import annotations

import math
from typing import Any


def json_safe(value: Any) -> Any:
    """The same structure with non-finite floats replaced by None (tuples become lists)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
