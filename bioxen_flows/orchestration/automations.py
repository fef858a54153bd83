"""Apply the project's Prefect automations (deployments/automations.yaml) idempotently.

`prefect automation create --from-file` creates a second copy each time it runs; this
creates an automation that does not exist yet and updates the one of the same name that
does, so a setup script can run it on every deploy.

A `send-notification` action names its notification block (`block: <type-slug>/<name>`,
e.g. `custom-webhook/bioxen-notify`) instead of the block's id, which differs per server;
it is resolved here. An automation whose block is not saved yet is skipped with a message
(save the block, run this again).

    python -m bioxen_flows.orchestration.automations deployments/automations.yaml
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bioxen_flows.errors import InputError, NotFoundError
from bioxen_flows.files import read_text_file

MAX_AUTOMATIONS_BYTES = 1024 * 1024  # a regular YAML file of at most 1 MiB


class MissingBlock(NotFoundError):
    """A notification block an automation names is not saved on the server."""


def declared_automations(path: Path) -> list[dict[str, Any]]:
    """The automations of `path` as written (block references unresolved)."""
    text = read_text_file(path, max_bytes=MAX_AUTOMATIONS_BYTES, what="automations file")
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not YAML ({str(exc).splitlines()[0]})") from None
    declared = document.get("automations") if isinstance(document, dict) else None
    if not isinstance(declared, list) or not declared:
        raise InputError(f"{path}: expected a non-empty 'automations:' list")
    return declared


def load_automations(
    path: Path, block_id: Callable[[str], str] | None = None
) -> list[Any]:
    """The automations declared in `path` (validated: a typo fails here, not on the server).

    `block_id(reference)` turns an action's `block: <type-slug>/<name>` into the block's
    id (default: a placeholder id, to validate the file without a server)."""
    from prefect.events.schemas.automations import AutomationCore

    resolve = block_id or (lambda reference: str(uuid.UUID(int=0)))
    automations = [AutomationCore.model_validate(_with_block_ids(item, resolve))
                   for item in declared_automations(path)]
    names = [a.name for a in automations]
    if len(set(names)) != len(names):
        raise InputError(f"{path}: automation names must be unique, got {names}")
    return automations


def _with_block_ids(item: dict[str, Any], block_id: Callable[[str], str]) -> dict[str, Any]:
    """`item` with each action's `block: <type-slug>/<name>` replaced by its id."""
    actions = []
    for action in item.get("actions") or []:
        if isinstance(action, dict) and "block" in action:
            reference = str(action["block"])
            action = {k: v for k, v in action.items() if k != "block"}
            action["block_document_id"] = block_id(reference)
        actions.append(action)
    return {**item, "actions": actions}


def server_block_id(client: Any) -> Callable[[str], str]:
    """Resolves `<type-slug>/<name>` to the id of that block on the server behind `client`."""
    from prefect.exceptions import ObjectNotFound

    def block_id(reference: str) -> str:
        slug, _, name = reference.partition("/")
        if not slug or not name:
            raise InputError(f"block must be '<type-slug>/<name>', got {reference!r}")
        try:
            return str(client.read_block_document_by_name(name, slug).id)
        except ObjectNotFound:
            raise MissingBlock(reference) from None

    return block_id


def apply_automations(path: Path) -> dict[str, str]:
    """Create or update each declared automation by name; returns {name: "created" |
    "updated" | "skipped: ..."} (skipped: the notification block it names is not saved).

    Extra automations of the same name (left by `prefect automation create` run twice) are
    deleted, so exactly one of each remains.
    """
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore

    load_automations(path)  # the whole file is valid before anything changes
    done: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        block_id = server_block_id(client)
        for item in declared_automations(path):
            try:
                automation = AutomationCore.model_validate(_with_block_ids(item, block_id))
            except MissingBlock as missing:
                done[item["name"]] = (f"skipped: no notification block {missing}; save one "
                                      "(docs/operations.md) and run this again")
                continue
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
        if action.startswith("skipped"):
            print(f"automation {name} {action}")
        else:
            print(f"{action} automation {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
