"""Apply the project's Prefect automations (deployments/automations.yaml) idempotently.

`prefect automation create --from-file` creates a second copy each time it runs; this
creates an automation that does not exist yet and updates the one of the same name that
does, so a setup script can run it on every deploy.

    python -m bioxen_flows.orchestration.automations deployments/automations.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml


def load_automations(path: Path) -> list[Any]:
    """The automations declared in `path` (validated: a typo fails here, not on the server)."""
    from prefect.events.schemas.automations import AutomationCore

    document = yaml.safe_load(path.read_text()) or {}
    declared = document.get("automations") if isinstance(document, dict) else None
    if not isinstance(declared, list) or not declared:
        raise ValueError(f"{path}: expected a non-empty 'automations:' list")
    automations = [AutomationCore.model_validate(item) for item in declared]
    names = [a.name for a in automations]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: automation names must be unique, got {names}")
    return automations


def apply_automations(path: Path) -> dict[str, str]:
    """Create or update each declared automation by name; returns {name: "created"|"updated"}.

    Extra automations of the same name (left by `prefect automation create` run twice) are
    deleted, so exactly one of each remains.
    """
    from prefect.client.orchestration import get_client

    done: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for automation in load_automations(path):
            existing = client.read_automations_by_name(automation.name)
            if existing:
                client.update_automation(existing[0].id, automation)
                for duplicate in existing[1:]:
                    client.delete_automation(duplicate.id)
                done[automation.name] = "updated"
            else:
                client.create_automation(automation)
                done[automation.name] = "created"
    return done


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bioxen_flows.orchestration.automations FILE.yaml", file=sys.stderr)
        return 2
    for name, action in apply_automations(Path(args[0])).items():
        print(f"{action} automation {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
