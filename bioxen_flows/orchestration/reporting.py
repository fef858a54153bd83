"""Comparison results as tidy pandas frames, files (Parquet, CSV, PNG) and Prefect artifacts."""

from __future__ import annotations

import base64
import io
import math
import os
import re
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

ID_COLUMNS = ["organism", "replicate", "vm_id", "role", "package"]
SUMMARY_METRICS = ("growth_rate_per_min", "doubling_time_min", "ribosomes_total", "atp_percent")


def timeseries_frame(specs: list[dict[str, Any]], results: dict[str, dict]) -> pd.DataFrame:
    """One row per VM x time point; identity columns first, measurements after (units in names)."""
    frames = []
    for spec in specs:
        frame = pd.DataFrame(results[spec["vm_id"]]["timeseries"])
        for i, column in enumerate(ID_COLUMNS):
            frame.insert(i, column, spec.get(column) if column != "organism" else spec["organism"])
        frames.append(frame)
    tidy = pd.concat(frames, ignore_index=True)
    tidy["organism"] = tidy["organism"].astype("category")
    tidy["role"] = tidy["role"].astype("category")
    tidy["replicate"] = tidy["replicate"].astype("int64")
    return tidy


def summary_frame(specs: list[dict[str, Any]], metrics: dict[str, dict]) -> pd.DataFrame:
    """Per organism: mean (and sd over replicates) of the final state, and the package's burden.

    burden_percent = 100 * (1 - growth with the package / growth of the control VM of the
    same organism, caps and seed, without it).
    """
    rows = [
        {"organism": s["organism"], "role": s["role"],
         **{k: metrics[s["vm_id"]][k] for k in SUMMARY_METRICS},
         **{f"protein_{g}": v for g, v in metrics[s["vm_id"]]["protein_molecules"].items()}}
        for s in specs
    ]
    final = pd.DataFrame(rows)
    cells = final[final["role"] == "cell"].drop(columns="role")
    grouped = cells.groupby("organism", sort=False)
    summary = grouped.mean(numeric_only=True)
    summary.insert(0, "replicates", grouped.size())
    if (summary["replicates"] > 1).any():
        summary["growth_rate_sd_per_min"] = grouped["growth_rate_per_min"].std(ddof=1)
    controls = final[final["role"] == "control"].set_index("organism")
    if not controls.empty:
        control_growth = controls["growth_rate_per_min"].reindex(summary.index)
        summary["control_growth_rate_per_min"] = control_growth
        summary["burden_percent"] = 100.0 * (1 - summary["growth_rate_per_min"] / control_growth)
    summary = summary.reset_index()
    if "burden_percent" in summary:  # the key number, next to the organism it belongs to
        summary.insert(1, "burden_percent", summary.pop("burden_percent"))
    return summary


LATEST = "latest"


def run_directory(out_dir: Path, run_name: str, run_id: str, now: datetime | None = None) -> Path:
    """`<out_dir>/<UTC date>-<flow run name>-<run id prefix>`: one directory per run.

    The run id makes it unique (two runs may share a name); the date and the name make it
    findable next to the run in the Prefect UI. Characters outside [A-Za-z0-9._+-] become
    '_', so a name can never leave `out_dir`.
    """
    day = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d")
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", run_name).strip("._") or "run"
    short_id = re.sub(r"[^A-Za-z0-9]", "", run_id)[:8] or "local"
    return out_dir / f"{day}-{name[:80]}-{short_id}"


def point_latest(out_dir: Path, run_dir: Path) -> Path:
    """Make `<out_dir>/latest` point at `run_dir`, atomically (readers never see it missing).

    A relative symlink, replaced with rename(2); where symlinks are not possible, a text
    file holding the directory's name, also replaced atomically.
    """
    latest = out_dir / LATEST
    tmp = out_dir / f".{LATEST}-{uuid.uuid4().hex}"
    try:
        os.symlink(run_dir.name, tmp, target_is_directory=True)
    except OSError:
        tmp.write_text(run_dir.name + "\n")
    try:
        os.replace(tmp, latest)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return latest


def write_results(
    series: pd.DataFrame, summary: pd.DataFrame, png: bytes, out_dir: Path
) -> dict[str, Path]:
    """Write the run's files into `out_dir` (a run directory of its own, see run_directory)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "timeseries_parquet": out_dir / "timeseries.parquet",
        "timeseries_csv": out_dir / "timeseries.csv",
        "summary_parquet": out_dir / "summary.parquet",
        "summary_csv": out_dir / "summary.csv",
        "plot_png": out_dir / "growth.png",
    }
    series.to_parquet(paths["timeseries_parquet"], index=False)
    series.to_csv(paths["timeseries_csv"], index=False)
    summary.to_parquet(paths["summary_parquet"], index=False)
    summary.to_csv(paths["summary_csv"], index=False)
    paths["plot_png"].write_bytes(png)
    return paths


def plot_png(series: pd.DataFrame) -> bytes:
    """Growth rate (and guest protein, if any) over time, mean per organism."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = series[series["role"] == "cell"]
    proteins = [c for c in cells.columns if c.startswith("protein_")]
    fig, axes = plt.subplots(1, 2 if proteins else 1, figsize=(11 if proteins else 6, 4))
    axes = list(axes) if proteins else [axes]
    mean = cells.groupby(["organism", "time_min"], observed=True).mean(numeric_only=True)
    for organism, frame in mean.groupby(level="organism", observed=True):
        t = frame.index.get_level_values("time_min")
        axes[0].plot(t, frame["growth_rate_per_min"], label=organism)
        for protein in proteins:
            axes[1].plot(t, frame[protein], label=f"{organism} {protein[8:]}")
    axes[0].set(xlabel="simulated time (min)", ylabel="growth rate (1/min)", title="Growth")
    if proteins:
        axes[1].set(xlabel="simulated time (min)", ylabel="molecules per cell",
                    title="Guest protein")
        axes[1].legend(fontsize=8)
    axes[0].legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def markdown_summary(summary: pd.DataFrame, png: bytes, title: str) -> str:
    """A markdown report for the Prefect UI: the summary table and the plot inline."""
    columns = list(summary.columns)
    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |",
             "|" + "---|" * len(columns)]
    for row in summary.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    image = base64.b64encode(png).decode()
    lines += ["", f"![growth over time](data:image/png;base64,{image})"]
    return "\n".join(lines)


def significant(value: Any, digits: int = 4) -> Any:
    """A float rounded to `digits` significant figures (other values unchanged)."""
    if isinstance(value, float) and math.isfinite(value) and value != 0:
        return round(value, digits - 1 - math.floor(math.log10(abs(value))))
    return value


def artifact_records(summary: pd.DataFrame) -> list[dict[str, Any]]:
    """The summary as table rows for the UI: 4 significant figures, missing values None."""
    records = summary.astype(object).where(summary.notna(), None).to_dict(orient="records")
    return [{k: significant(v) for k, v in row.items()} for row in records]


def publish_artifacts(summary: pd.DataFrame, png: bytes, key: str) -> None:
    """Table and markdown artifacts, shown on the flow run's page in the Prefect UI."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_table_artifact(
        artifact_records(summary), key=f"{key}-summary",
        description="Per-organism summary (4 significant figures; burden_percent = growth "
                    "lost to the package relative to the control cell)",
    )
    create_markdown_artifact(
        markdown_summary(summary, png, "BioXen organism comparison"),
        key=f"{key}-report", description="Summary table and growth plot",
    )


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
