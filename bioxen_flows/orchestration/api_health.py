"""Is the Prefect API this process would report to able to take a run? (`bioxen doctor`)"""

from __future__ import annotations

from bioxen_flows.errors import CheckFailed


def check_prefect_api() -> str:
    """One healthcheck call to the configured API (or the ephemeral server it would start)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    with get_client(sync_client=True) as client:
        failure = client.api_healthcheck()
    if failure is not None:
        raise CheckFailed(f"Prefect API {url or '(ephemeral)'} is unhealthy: {failure}")
    return f"Prefect API {url} answers" if url else "the ephemeral Prefect server starts"
