"""Design-space sweep results: the tidy dataset, summary, heatmaps, best points, artifacts."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from bioxen_flows.orchestration.reporting import artifact_records

# Dataset columns after the identity columns, units in the names.
MEASURES = ("growth_rate_per_min", "doubling_time_min", "burden_percent", "protein_per_cell",
            "protein_per_cell_per_hour", "ribosomes_total", "atp_percent")
DESIGN = ("organism", "nutrient_molecules", "strength", "copies")
YIELD = "protein_per_cell_per_hour"


def points_frame(
    points: list[dict[str, Any]],
    results: list[dict[str, Any]],
    reused: list[bool],
    *,
    run_id: str,
    run_name: str,
    now: datetime | None = None,
) -> pd.DataFrame:
    """One row per point and replicate (controls included, role 'control').

    burden_percent = 100 * (1 - growth / growth of the control of the same organism and
    nutrient): the growth the package costs.
    """
    rows = []
    for point, result, hit in zip(points, results, reused, strict=True):
        rows.append({
            "organism": point["organism"], "role": point["role"], "package": point["package"],
            "strength": point["strength"], "copies": point["copies"],
            "replicate": point["replicate"], "seed": point["seed"], "hours": point["hours"],
            **result, "reused": hit,
            # computed once for an equal design (strength x copies), see sweep.equal_designs
            "same_design_as": point.get("same_design_as"),
        })
    frame = pd.DataFrame(rows)
    control = frame[frame["role"] == "control"].set_index(["organism", "nutrient_molecules"])
    growth = control["growth_rate_per_min"]
    keys = pd.MultiIndex.from_frame(frame[["organism", "nutrient_molecules"]])
    frame["burden_percent"] = 100.0 * (1 - frame["growth_rate_per_min"].to_numpy()
                                       / growth.reindex(keys).to_numpy())
    frame.insert(0, "run_id", run_id)
    frame.insert(1, "run_name", run_name)
    frame.insert(2, "run_time", pd.Timestamp(now or datetime.now(timezone.utc)))
    ordered = ["run_id", "run_name", "run_time", "organism", "role", "package", "strength",
               "copies", "nutrient_molecules", "replicate", "seed", "hours", *MEASURES, "reused",
               "same_design_as"]
    frame = frame[ordered]
    frame["copies"] = frame["copies"].astype("Int64")
    frame["seed"] = frame["seed"].astype("Int64")
    frame["replicate"] = frame["replicate"].astype("int64")
    frame["same_design_as"] = frame["same_design_as"].astype("string")
    return frame


def summary_frame(dataset: pd.DataFrame) -> pd.DataFrame:
    """Mean over replicates per design point (cells only); with replicates also the sd and
    the 95 % interval of the mean (Student's t) of growth, yield and burden."""
    cells = dataset[dataset["role"] == "cell"]
    grouped = cells.groupby(list(DESIGN), sort=True)
    summary = grouped[list(MEASURES)].mean()
    summary.insert(0, "replicates", grouped.size())
    if (summary["replicates"] > 1).any():
        from bioxen_flows.orchestration.reporting import t_interval_half_width

        for column, name in (("growth_rate_per_min", "growth_rate"), (YIELD, YIELD),
                             ("burden_percent", "burden")):
            sd = grouped[column].std(ddof=1)
            half = t_interval_half_width(sd, summary["replicates"])
            summary[f"{name}_sd" if name != "growth_rate" else "growth_rate_sd_per_min"] = sd
            summary[f"{column}_ci95_low"] = summary[column] - half
            summary[f"{column}_ci95_high"] = summary[column] + half
    return summary.reset_index()


def best_points(summary: pd.DataFrame, max_burden: float) -> pd.DataFrame:
    """Per organism (and nutrient): the point with the highest protein per cell per hour
    whose burden is at most `max_burden` %; an organism with none keeps a row of NaN."""
    rows = []
    for (organism, nutrient), group in summary.groupby(["organism", "nutrient_molecules"]):
        allowed = group[group["burden_percent"] <= max_burden]
        if allowed.empty:
            rows.append({"organism": organism, "nutrient_molecules": nutrient,
                         "within_burden_limit": False,
                         "note": no_point_reason(group, max_burden)})
            continue
        best = allowed.loc[allowed[YIELD].idxmax()]
        rows.append({**best.to_dict(), "within_burden_limit": True, "note": None})
    columns = ["organism", "nutrient_molecules", "strength", "copies", YIELD, "burden_percent",
               "growth_rate_per_min", "doubling_time_min", "protein_per_cell",
               "within_burden_limit", "note"]
    return pd.DataFrame(rows).reindex(columns=columns)


def no_point_reason(group: pd.DataFrame, max_burden: float) -> str:
    """Why no point of one organism and nutrient level meets the burden limit: the
    lowest burden there was and where, or that no burden could be computed."""
    known = group.dropna(subset=["burden_percent"])
    if known.empty:
        return "no point has a burden (the control's growth is missing or zero)"
    low = known.loc[known["burden_percent"].idxmin()]
    return (f"no point has burden <= {max_burden:g} %: the lowest is "
            f"{low['burden_percent']:.3g} % (strength {low['strength']:g}, copies "
            f"{int(low['copies'])}); raise --max-burden or try weaker or fewer copies")


def heatmap_png(summary: pd.DataFrame, organism: str, max_burden: float) -> bytes:
    """`heatmap_figure` as PNG bytes."""
    import matplotlib.pyplot as plt

    fig = heatmap_figure(summary, organism, max_burden)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def heatmap_figure(summary: pd.DataFrame, organism: str, max_burden: float) -> Any:
    """Strength x copies coloured by protein per cell per hour, burden contours on top (the
    `max_burden` limit red and dashed) and the best point under it starred; one panel per
    nutrient level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    own = summary[summary["organism"] == organism]
    levels = sorted(own["nutrient_molecules"].unique())
    fig, axes = plt.subplots(1, len(levels), figsize=(5.2 * len(levels), 4.2), squeeze=False)
    for ax, level in zip(axes[0], levels, strict=True):
        data = own[own["nutrient_molecules"] == level]
        yields = data.pivot(index="copies", columns="strength", values=YIELD)
        burden = data.pivot(index="copies", columns="strength", values="burden_percent")
        image = ax.imshow(yields.to_numpy(), origin="lower", aspect="auto", cmap="viridis")
        fig.colorbar(image, ax=ax, label="protein per cell per hour (molecules/h)")
        xs, ys = _ticks(len(yields.columns)), _ticks(len(yields.index))
        ax.set_xticks(xs, [f"{yields.columns[i]:.3g}" for i in xs], rotation=45 * (len(xs) > 6))
        ax.set_yticks(ys, [str(yields.index[i]) for i in ys])
        ax.set(xlabel="promoter strength (x package's)", ylabel="copies",
               title=f"{organism}, nutrient {level:g}")
        values = burden.to_numpy(dtype=float)
        if min(values.shape) >= 2 and np.isfinite(values).all():
            marks = sorted({v for v in (5, 10, 20, 40, 60, 80)
                            if values.min() < v < values.max() and v != max_burden})
            if marks:
                lines = ax.contour(values, levels=marks, colors="white", linewidths=0.8)
                ax.clabel(lines, fmt=lambda v: f"{v:g}% burden", fontsize=7)
            if values.min() < max_burden < values.max():  # the limit: thick, red, dashed
                limit = ax.contour(values, levels=[max_burden], colors="red",
                                   linestyles="--", linewidths=2)
                ax.clabel(limit, fmt=lambda v: f"limit {v:g}%", fontsize=8)
        _mark_best(ax, data, yields, max_burden)
    fig.tight_layout()
    return fig


def _mark_best(ax: Any, data: pd.DataFrame, yields: pd.DataFrame, max_burden: float) -> None:
    """A star on the best point under the limit (as `best_points` picks it), or a title
    line saying that no point qualifies."""
    allowed = data[data["burden_percent"] <= max_burden]
    if allowed.empty:
        ax.set_title(f"{ax.get_title()}\nno point with burden <= {max_burden:g} %",
                     fontsize=9)
        return
    best = allowed.loc[allowed[YIELD].idxmax()]
    x = list(yields.columns).index(best["strength"])
    y = list(yields.index).index(best["copies"])
    ax.plot([x], [y], marker="*", markersize=16, color="red", markeredgecolor="white",
            linestyle="none", label=f"best with burden <= {max_burden:g} %")
    ax.legend(loc="upper left", fontsize=7, framealpha=0.9)


def _ticks(n: int, most: int = 10) -> list[int]:
    """At most `most` evenly spaced tick positions of n cells (a 50-strength axis stays
    readable)."""
    step = max(1, -(-n // most))
    return list(range(0, n, step))


def write_points(dataset: pd.DataFrame, run_dir: Path) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Write the points (Parquet, by organism) and their summary (CSV): all a stopped sweep
    writes. Returns the summary and the paths."""
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = summary_frame(dataset)
    paths = {"dataset": run_dir / "points", "summary_csv": run_dir / "summary.csv"}
    dataset.to_parquet(paths["dataset"], partition_cols=["organism"], index=False)
    summary.to_csv(paths["summary_csv"], index=False)
    return summary, paths


REFINED = ("refined_strength", f"refined_{YIELD}", "refined_burden_percent",
           "refined_growth_rate_per_min")


def write_sweep(dataset: pd.DataFrame, run_dir: Path, max_burden: float,
                refine: Callable[[pd.Series], dict[str, float]] | None = None) -> dict[str, Any]:
    """Write the run's files; returns the summary, best points, PNGs and paths. With
    `refine`, each organism's best grid point gets the refined optimum beside it."""
    summary, paths = write_points(dataset, run_dir)
    best = best_points(summary, max_burden)
    if refine is not None:
        refined = [refine(row) if row["within_burden_limit"] else {}
                   for _, row in best.iterrows()]
        for column in REFINED:
            best[column] = [r.get(column, float("nan")) for r in refined]
    paths.update(best_csv=run_dir / "best.csv", best_md=run_dir / "best.md")
    best.to_csv(paths["best_csv"], index=False)
    pngs = {}
    for organism in summary["organism"].unique():
        pngs[organism] = heatmap_png(summary, organism, max_burden)
        paths[f"heatmap_{organism}"] = run_dir / f"heatmap-{organism}.png"
        paths[f"heatmap_{organism}"].write_bytes(pngs[organism])
    report = {"dataset": dataset, "summary": summary, "best": best, "pngs": pngs,
              "paths": paths}
    paths["best_md"].write_text(markdown_report(report, max_burden, images=False))
    return report


def markdown_report(report: dict[str, Any], max_burden: float, *, images: bool = True) -> str:
    """Best point per organism under the burden limit; heatmaps inline for the UI."""
    best: pd.DataFrame = report["best"]
    dataset: pd.DataFrame = report["dataset"]
    lines = ["# Design-space sweep", "",
             f"{int((dataset['role'] == 'cell').sum())} points, "
             f"{int(dataset['reused'].sum())} VMs reused from the cache. Best point per "
             f"organism: most protein per cell per hour with burden <= {max_burden:g} %.", "",
             "| " + " | ".join(best.columns) + " |", "|" + "---|" * len(best.columns)]
    for row in artifact_records(best):
        lines.append("| " + " | ".join(_cell(v) for v in row.values()) + " |")
    notes = [f"- {row['organism']}, nutrient {row['nutrient_molecules']:g}: {row['note']}"
             for _, row in best.iterrows() if isinstance(row["note"], str)]
    if notes:
        lines += ["", *notes]
    if images:
        for organism, png in report["pngs"].items():
            image = base64.b64encode(png).decode()
            lines += ["", f"![{organism} heatmap](data:image/png;base64,{image})"]
    return "\n".join(lines) + "\n"


def publish_artifacts(report: dict[str, Any], max_burden: float, key: str) -> None:
    """The best points as a table artifact and the report with heatmaps as markdown."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_table_artifact(
        artifact_records(report["best"]), key=f"{key}-best",
        description=f"Best point per organism: most protein per cell per hour with burden "
                    f"<= {max_burden:g} % (4 significant figures)",
    )
    create_markdown_artifact(markdown_report(report, max_burden), key=f"{key}-report",
                             description="Best points and strength x copies heatmaps")


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
