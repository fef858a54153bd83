"""The child process that runs a `bioxen results query`: DuckDB, read-only, boxed in.

Run as `python -m bioxen_flows.results_sandbox` by `bioxen_flows.results.query`, which
sends a JSON request on stdin and reads the reply on stdout: one JSON line (`error`,
`skipped`), then, when the query ran, its rows as an Arrow IPC stream.

Why a process of its own: DuckDB's `memory_limit` does not bound every allocation (a
`repeat('x', 700000000)` took 1.4 GiB under a 512 MB limit), so the address space is
capped with `RLIMIT_AS`; a query past its time is ended by killing the process; and
nothing the query does outlives it. Inside, DuckDB may read only the results folder
(`enable_external_access` off, the folder in `allowed_directories`), and the
configuration is locked before the user's SQL runs, so the SQL cannot undo any of it.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

RUN_DIR_SQL = "regexp_extract(filename, '([^/]+)/{tail}$', 1)"
VIEWS = {
    "comparisons": ("*/summary.parquet", "summary.parquet"),
    "comparison_timeseries": ("*/timeseries.parquet", "timeseries.parquet"),
    "sweeps": ("*/points/organism=*/*.parquet", "points/organism=[^/]+/[^/]+"),
}
LATEST = "latest"  # the link to the newest run (orchestration.reporting.point_latest)
RUN_RECORD_MAX = 64 << 10  # run.json is a few lines; anything larger is not ours


def main() -> None:
    from bioxen_flows.orchestration.stopping import exit_with_parent

    exit_with_parent()  # a killed `bioxen results query` leaves no query running
    request = json.loads(sys.stdin.read())
    limit = int(request["address_space_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cpu = int(request["cpu_seconds"])  # past it the kernel ends the process, parent or not
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    reply: dict[str, Any] = {"error": None, "skipped": [], "views": []}
    table = None
    try:
        import duckdb

        try:
            con = sandbox(Path(request["results_dir"]), request["memory_limit"],
                          reply["skipped"])
            reply["views"] = [row[0] for row in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1"
            ).fetchall()]
            table = (con.sql(request["sql"]).limit(int(request["max_rows"]) + 1)
                     .fetch_arrow_table())
        except duckdb.Error as exc:
            reply["error"] = str(exc).strip().splitlines()[0]
    except MemoryError:
        reply["error"] = "Out of Memory Error: the query needs more memory than it may use"
    out = sys.stdout.buffer
    out.write(json.dumps(reply).encode() + b"\n")
    if table is not None:
        import pyarrow.ipc

        with pyarrow.ipc.new_stream(out, table.schema) as writer:
            writer.write_table(table)
    out.flush()


def sandbox(results_dir: Path, memory_limit: str, skipped: list[str]) -> Any:
    """An in-memory DuckDB holding the views, that can read nothing but `results_dir`."""
    import duckdb

    base = results_dir.resolve()
    con = duckdb.connect(":memory:", config={
        "threads": 1, "memory_limit": memory_limit, "autoinstall_known_extensions": False,
        "autoload_known_extensions": False})
    create_views(con, base, skipped)
    con.execute("SET allowed_directories = ?", [[str(base) + os.sep]])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def create_views(con: Any, base: Path, skipped: list[str]) -> None:
    """`runs` (one row per run folder) and, per kind of dataset found, a view of every run
    and a `latest_` view of the newest run only."""
    runs = _run_rows(base)
    con.execute("CREATE TABLE run_records (run_dir VARCHAR, started_at TIMESTAMPTZ, "
                "complete BOOLEAN, vms_done BIGINT, vms BIGINT)")
    if runs:
        con.executemany("INSERT INTO run_records VALUES (?, ?, ?, ?, ?)", runs)
    con.execute("CREATE VIEW runs AS SELECT * FROM run_records ORDER BY started_at, run_dir")
    for view, (pattern, tail) in VIEWS.items():
        files = [f for f in sorted(base.glob(pattern)) if _is_run(f.relative_to(base))
                 and _readable(con, f, base, skipped)]
        if not files:
            continue
        listing = "[" + ", ".join(_literal(str(f)) for f in files) + "]"
        run_dir = RUN_DIR_SQL.format(tail=tail)
        # sweeps hold their own run_id/run_time; comparisons get run_id from the folder name
        extra = ("" if view == "sweeps" else
                 f", regexp_extract({run_dir}, '-([A-Za-z0-9]+)$', 1) AS run_id")
        con.execute(
            f"CREATE VIEW {view} AS SELECT d.*, r.started_at FROM ("
            f"SELECT * EXCLUDE (filename), {run_dir} AS run_dir, "
            f"TRY_CAST(left({run_dir}, 10) AS DATE) AS run_date{extra} "
            f"FROM read_parquet({listing}, filename = true, hive_partitioning = true, "
            "union_by_name = true)) d LEFT JOIN run_records r USING (run_dir)"
        )
        # the newest run holding this kind of data; a stopped (partial) run only if no
        # complete one is newer
        con.execute(
            f"CREATE VIEW latest_{view} AS SELECT * FROM {view} WHERE run_dir = ("
            f"SELECT run_dir FROM {view} ORDER BY started_at DESC NULLS LAST, run_dir DESC "
            "LIMIT 1)"
        )


def _run_rows(base: Path) -> list[tuple[Any, ...]]:
    """(run_dir, started_at, complete, vms_done, vms) per run folder, from its run.json:
    `started` (the flow run's start), else `written` (its end; older records), else the
    folder's date."""
    rows = []
    for folder in sorted(base.iterdir()):
        if not folder.is_dir() or not _is_run(folder.relative_to(base)):
            continue
        record: dict[str, Any] = {}
        path = folder / "run.json"
        try:
            if path.is_file() and path.stat().st_size <= RUN_RECORD_MAX:
                loaded = json.loads(path.read_text())
                record = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            record = {}
        started = record.get("started") or record.get("written") or folder.name[:10]
        rows.append((folder.name, _timestamp(started), _bool(record.get("complete")),
                     _int(record.get("vms_done")), _int(record.get("vms"))))
    return rows


def _readable(con: Any, path: Path, base: Path, skipped: list[str]) -> bool:
    """Whether DuckDB can read the file's footer and schema; a damaged file is skipped (and
    named) so that one bad run folder does not fail every query."""
    import duckdb

    try:
        con.execute("SELECT * FROM read_parquet(?, hive_partitioning = false) LIMIT 0",
                    [str(path)])
        return True
    except duckdb.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        skipped.append(f"{path.relative_to(base)} ({reason[:200]})")
        return False


def _is_run(relative: Path) -> bool:
    """A run directory's file: not `latest` (it points at a run already listed), not hidden."""
    top = relative.parts[0]
    return top != LATEST and not top.startswith(".")


def _timestamp(value: object) -> str | None:
    from datetime import datetime, timezone

    try:
        stamp = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).isoformat()


def _bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


if __name__ == "__main__":
    main()
