"""Tags every flow run the product starts carries, wherever it was started (CLI, a
deployment, an automation): `bioxen` (the automations in deployments/automations.yaml and
the cleanup trigger match runs by it) plus what the run is about (its organisms,
infrastructure, or `sweep`, `cleanup`, `reap`), so runs are filterable in the UI."""

from __future__ import annotations

from uuid import UUID

from prefect.runtime import flow_run as current_run

PRODUCT_TAG = "bioxen"


def tag_flow_run(tags: list[str]) -> None:
    """Add `bioxen` and `tags` to the running flow run's tags (keeping a deployment's own).

    On the flow run only: tags on task runs would make Prefect take a tag concurrency slot
    per task run (an API call each; under load, 503 back-offs of ~2 s)."""
    run_id = current_run.get_id()
    if not run_id:
        return
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.update_flow_run(UUID(run_id),
                               tags=sorted({*(current_run.tags or []), PRODUCT_TAG, *tags}))
