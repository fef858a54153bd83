"""Comparison results as tidy pandas frames, files (Parquet, CSV, PNG) and Prefect artifacts."""

from __future__ import annotations

import base64
import io
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
    return summary.reset_index()


def write_results(
    series: pd.DataFrame, summary: pd.DataFrame, png: bytes, out_dir: Path
) -> dict[str, Path]:
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


def publish_artifacts(summary: pd.DataFrame, png: bytes, key: str) -> None:
    """Table and markdown artifacts, shown on the flow run's page in the Prefect UI."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    records = summary.astype(object).where(summary.notna(), None).to_dict(orient="records")
    create_table_artifact(records, key=f"{key}-summary", description="Per-organism summary")
    create_markdown_artifact(
        markdown_summary(summary, png, "BioXen organism comparison"),
        key=f"{key}-report", description="Summary table and growth plot",
    )


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
