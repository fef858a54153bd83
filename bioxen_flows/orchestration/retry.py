"""The retry policies of the orchestration's tasks, in one table.

Only transient infrastructure faults are retried (`retry_transient_only`): bad input fails
at once. A bio-VM step (create, start, teardown) retries 3 times over ~40 s; an XCP-ng
provisioning step, which waits on a pool that may be briefly busy, 4 times over ~50 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bioxen_flows.errors import TransientInfrastructureError


def retry_transient_only(task, task_run, state) -> bool:  # noqa: ANN001 (Prefect hook)
    """Retry when the infrastructure hiccuped; bad input fails at once."""
    try:
        state.result()
    except TransientInfrastructureError:
        return True
    except Exception:
        return False
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """How often and after which delays (seconds) a task is retried."""

    retries: int
    delays_s: tuple[float, ...]

    def task_options(self) -> dict[str, Any]:
        """The `@task(...)` keyword arguments of this policy."""
        return {"retries": self.retries, "retry_delay_seconds": list(self.delays_s),
                "retry_condition_fn": retry_transient_only}


VM_STEP = RetryPolicy(retries=3, delays_s=(2, 10, 30))
XCPNG_STEP = RetryPolicy(retries=4, delays_s=(2, 5, 15, 30))
