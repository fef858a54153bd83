"""SQL over every run's results: DuckDB views on the Parquet files under a results folder.

Each comparison and each sweep writes a run directory `<UTC date>-<run name>-<run id
prefix>` (see orchestration.reporting.run_directory); these views gather all of them, so
tonight's comparison can be set against last week's:

| view | one row per | from |
|---|---|---|
| `runs` | run folder (`started_at`, `complete`, `vms_done`, `vms`) | `*/run.json` |
| `comparisons` | organism per comparison run | `*/summary.parquet` |
| `comparison_timeseries` | VM x simulated minute per comparison run | `*/timeseries.parquet` |
| `sweeps` | design point x replicate per sweep run | `*/points/organism=*/*.parquet` |

Every data view has `run_dir`, `run_date`, `run_id` (the id prefix in the folder name;
sweeps carry the full `run_id` and `run_time`) and `started_at` (when the flow run
started); `latest_comparisons`, `latest_comparison_timeseries` and `latest_sweeps` hold
only the newest run's rows (running a sweep twice doubles the rows of `sweeps`, not of
`latest_sweeps`).

The query runs in a child process (`results_sandbox`): one SELECT-type statement, read
access to the results folder only, bounded memory and time.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from bioxen_flows.errors import InputError

MAX_ROWS = 100_000  # rows a query may return to the shell
TIMEOUT_S = 60.0  # a query's wall-clock time, by default
MEMORY_LIMIT = "512MB"  # DuckDB's own budget (it spills or fails past it)
ADDRESS_SPACE = 1 << 30  # the child's whole address space: what DuckDB's limit misses
ALLOWED = {"SELECT"}  # statement types run; DESCRIBE, SHOW, SUMMARIZE, VALUES are SELECTs
log = logging.getLogger(__name__)


def query(results_dir: Path, sql: str, timeout: float = TIMEOUT_S) -> Any:  # -> DataFrame
    """Run one SELECT over the views; a refused or failing query is one `InputError` line.

    Damaged Parquet files are skipped with a warning (logged) naming each one."""
    if not results_dir.is_dir():
        raise InputError(f"no results folder {str(results_dir)!r} (see --results)")
    if not timeout > 0:
        raise InputError(f"--timeout must be above 0 seconds, not {timeout}")
    check_statement(sql)
    request = {"results_dir": str(results_dir.resolve()), "sql": sql,
               "memory_limit": MEMORY_LIMIT, "address_space_bytes": ADDRESS_SPACE,
               "max_rows": MAX_ROWS, "cpu_seconds": math.ceil(timeout) + 10}
    reply, body = _run_child(request, timeout)
    for skipped in reply["skipped"]:
        log.warning("skipped a damaged file: %s", skipped)
    if reply["error"]:
        raise InputError(f"query failed: {reply['error']} (views: {_views(reply)})")
    frame = _frame(body)
    if len(frame) > MAX_ROWS:
        raise InputError(f"the query returns more than {MAX_ROWS:,} rows; add a LIMIT")
    return frame


def check_statement(sql: str) -> None:
    """Refuse, in one line, anything but one query (COPY, ATTACH, DROP, INSTALL, SET...)."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise InputError(f"query failed: {str(exc).strip().splitlines()[0]}") from None
    if len(statements) != 1:
        raise InputError(f"give exactly one SELECT statement, not {len(statements)}")
    kind = statements[0].type.name
    if kind not in ALLOWED:
        words = statements[0].query.split()
        verb = words[0].upper() if words and words[0].isalpha() else kind
        raise InputError(f"only SELECT queries may run here, not {verb} (results are read-only)")


def _run_child(request: dict[str, Any], timeout: float) -> tuple[dict[str, Any], bytes]:
    """Run the sandbox with `request`; kill it past `timeout` or on Ctrl-C (it runs in its
    own session, so the terminal's Ctrl-C reaches this process, which ends it)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "bioxen_flows.results_sandbox"], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        out, err = child.communicate(json.dumps(request).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(child)
        raise InputError(f"query stopped after {timeout:g} s (--timeout)") from None
    except BaseException:  # Ctrl-C: the query must not keep running
        _kill(child)
        raise
    head, _, body = out.partition(b"\n")
    if child.returncode != 0 or not head:
        if child.returncode == -signal.SIGKILL or b"MemoryError" in err:
            raise InputError("query stopped: it needs more memory than a query may use "
                             f"({ADDRESS_SPACE >> 20} MiB)")
        last = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise InputError(f"query failed: {last}")
    return json.loads(head), body


def _kill(child: subprocess.Popen[bytes]) -> None:
    child.kill()
    child.wait()


def _frame(body: bytes) -> Any:
    """The Arrow stream as a DataFrame, through DuckDB (the same dtypes as `.df()`)."""
    import duckdb
    import pyarrow.ipc

    table = pyarrow.ipc.open_stream(body).read_all()
    con = duckdb.connect(":memory:")
    try:
        return con.from_arrow(table).df()
    finally:
        con.close()


def _views(reply: dict[str, Any]) -> str:
    return ", ".join(reply.get("views") or []) or "none"
