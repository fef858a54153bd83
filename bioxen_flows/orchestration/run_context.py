"""What a flow knows about the run it is in: its id, the labels it puts on its VMs, the
short tag that names them, and whether a (possibly other) flow run is over.

One place for these facts: the reaper, the tasks, the XCP-ng tasks and the flows all ask
here, so a label or the run tag is spelled once. Prefect is imported only by the functions
that ask it, so the pure parts (labels, tag) cost nothing to import.
"""

from __future__ import annotations

import re
import sys
import uuid
from dataclasses import dataclass
from typing import Any

from bioxen_flows.processes import process_identity
from bioxen_flows.run_identity import FLOW_RUN_LABEL, NO_RUN

# The label naming the process that ran the flow (``host:pid:start``).
PROCESS_LABEL = "bioxen_process"


def current_run_id() -> str:
    """The running flow run's id, or `NO_RUN` outside one (what a run's VMs are labelled by)."""
    from prefect.runtime import flow_run as current_run

    return str(current_run.get_id() or NO_RUN)


def flow_run_id_if_loaded() -> str | None:
    """The flow run Prefect says this code runs in, without importing Prefect (a process
    that has not loaded it runs no flow): the provider behind `run_identity`."""
    if "prefect" not in sys.modules:
        return None
    from prefect.runtime import flow_run as current_run

    return current_run.get_id()


def run_parameters() -> dict[str, Any]:
    """The running flow run's parameters (empty outside one)."""
    from prefect.runtime import flow_run as current_run

    return dict(current_run.parameters or {})


def run_name(default: str) -> str:
    """The running flow run's name, or `default` outside one."""
    from prefect.runtime import flow_run as current_run

    return current_run.get_name() or default


def run_tag(flow_run_id: str) -> str:
    """The short tag that names a run's VMs and results folder: the last 8 hex digits of
    its id. Prefect's ids are time-ordered (UUIDv7): runs the scheduler creates together
    share their first digits, while the last ones are random."""
    return re.sub(r"[^A-Za-z0-9]", "", flow_run_id)[-8:] or NO_RUN


def with_run_labels(config: dict[str, Any] | None, flow_run_id: str) -> dict[str, Any]:
    """``config`` with the labels a flow puts on every VM it creates: its run id and the
    identity of the flow's own process (call it in the flow, not in a task worker)."""
    config = dict(config or {})
    config["labels"] = {**(config.get("labels") or {}), FLOW_RUN_LABEL: flow_run_id,
                        PROCESS_LABEL: process_identity()}
    return config


def is_run_id(text: str) -> bool:
    """Whether `text` can be a flow run id (a UUID): anything else is never looked up."""
    try:
        uuid.UUID(text)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


@dataclass(frozen=True)
class RunState:
    """A flow run's state as the Prefect API has it: its name and whether it is over."""

    name: str
    final: bool


def read_flow_run(run_id: str) -> Any:
    """The flow run `run_id` from the Prefect API (raises Prefect's ObjectNotFound)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(run_id))


def flow_run_states(run_ids: set[str]) -> dict[str, RunState | None]:
    """Each flow run's state in the Prefect API (None: not a run id, unknown there, or
    stateless). An unreachable API raises: each caller decides what that means."""
    states: dict[str, RunState | None] = dict.fromkeys(run_ids)
    valid = sorted(run_id for run_id in run_ids if is_run_id(run_id))
    if not valid:
        return states
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for run_id in valid:
            try:
                run = client.read_flow_run(uuid.UUID(run_id))
            except ObjectNotFound:
                continue
            if run.state is not None:
                states[run_id] = RunState(run.state.name, run.state.is_final())
    return states


def flow_run_is_live(run_id: str) -> bool:
    """Whether the flow run `run_id` exists and is not over (raises when the API is
    unreachable: nothing is taken for dead on a guess)."""
    state = flow_run_states({run_id}).get(run_id)
    return state is not None and not state.final
