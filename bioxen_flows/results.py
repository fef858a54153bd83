"""SQL over every run's results: DuckDB views on the Parquet files under a results folder.

Each comparison and each sweep writes a run directory `<UTC date>-<run name>-<run id
prefix>` (see orchestration.reporting.run_directory); these views gather all of them, so
tonight's comparison can be set against last week's:

| view | one row per | from |
|---|---|---|
| `comparisons` | organism per comparison run | `*/summary.parquet` |
| `comparison_timeseries` | VM x simulated minute per comparison run | `*/timeseries.parquet` |
| `sweeps` | design point x replicate per sweep run | `*/points/organism=*/*.parquet` |

Every view has `run_dir`, `run_date` and `run_id` (the id prefix in the folder name;
sweeps also carry the full `run_id` and `run_time`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bioxen_flows.errors import InputError

RUN_DIR_SQL = "regexp_extract(filename, '([^/]+)/{tail}$', 1)"
VIEWS = {
    "comparisons": ("*/summary.parquet", "summary.parquet"),
    "comparison_timeseries": ("*/timeseries.parquet", "timeseries.parquet"),
    "sweeps": ("*/points/organism=*/*.parquet", "points/organism=[^/]+/[^/]+"),
}
LATEST = "latest"  # the link to the newest run (orchestration.reporting.point_latest)
MAX_ROWS = 100_000  # rows a query may return to the shell


def connect(results_dir: Path) -> Any:  # -> duckdb.DuckDBPyConnection
    """An in-memory DuckDB with one view per kind of dataset found under `results_dir`."""
    import duckdb

    if not results_dir.is_dir():
        raise InputError(f"no results folder {str(results_dir)!r} (see --results)")
    con = duckdb.connect(":memory:")
    base = results_dir.resolve()
    for view, (pattern, tail) in VIEWS.items():
        files = sorted(str(f) for f in base.glob(pattern) if _is_run(f.relative_to(base)))
        if not files:
            continue
        listing = "[" + ", ".join(map(_literal, files)) + "]"
        run_dir = RUN_DIR_SQL.format(tail=tail)
        # sweeps hold their own run_id/run_time; comparisons get them from the folder name
        extra = ("" if view == "sweeps" else
                 f", regexp_extract({run_dir}, '-([A-Za-z0-9]+)$', 1) AS run_id")
        con.execute(
            f"CREATE VIEW {view} AS SELECT * EXCLUDE (filename), {run_dir} AS run_dir, "
            f"TRY_CAST(left({run_dir}, 10) AS DATE) AS run_date{extra} "
            f"FROM read_parquet({listing}, filename = true, hive_partitioning = true, "
            "union_by_name = true)"
        )
    return con


def query(results_dir: Path, sql: str) -> Any:  # -> pandas.DataFrame
    """Run one SQL query over the views; a failing query is one `InputError` line."""
    import duckdb

    con = connect(results_dir)
    try:
        views = [row[0] for row in con.execute(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()]
        try:
            relation = con.sql(sql)
            if relation is None:
                raise InputError("the query returned no rows (give a SELECT)")
            frame = relation.limit(MAX_ROWS + 1).df()
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0]
            raise InputError(f"query failed: {first} (views: {', '.join(views) or 'none'})"
                             ) from None
        if len(frame) > MAX_ROWS:
            raise InputError(f"the query returns more than {MAX_ROWS:,} rows; add a LIMIT")
        return frame
    finally:
        con.close()


def _is_run(relative: Path) -> bool:
    """A run directory's file: not `latest` (it points at a run already listed), not hidden."""
    top = relative.parts[0]
    return top != LATEST and not top.startswith(".")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
