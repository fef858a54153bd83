"""How values are written into the store: canonical JSON text, and never a secret."""

from __future__ import annotations

import json
from typing import Any

from bioxen_flows.errors import InputError

SECRET_KEYS = frozenset({"password", "secret", "token", "private_key"})


def check_no_secrets(value: Any, where: str) -> None:
    """Refuse a mapping holding a non-empty ``password``, ``secret``, ``token`` or
    ``private_key`` key (at any depth) before it reaches disk: the database is not a secret
    store."""
    if isinstance(value, dict):
        for key, item in value.items():
            if str(key).lower() in SECRET_KEYS and item not in (None, ""):
                raise InputError(
                    f"refusing to store {key!r} in {where}: secrets are never persisted; "
                    "the password must come from the environment or a Prefect Secret block"
                )
            check_no_secrets(item, where)
    elif isinstance(value, (list, tuple)):
        for item in value:
            check_no_secrets(item, where)


def dump(value: Any) -> str | None:
    """JSON text (keys sorted, no NaN or infinity), None for None."""
    return None if value is None else json.dumps(value, sort_keys=True, allow_nan=False)
