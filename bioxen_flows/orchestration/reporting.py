"""Comparison results as tidy pandas frames, files (Parquet, CSV, PNG) and Prefect artifacts."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from bioxen_flows.orchestration.batching import VMSpec
from bioxen_flows.orchestration.run_context import run_tag

ID_COLUMNS = ["organism", "replicate", "vm_id", "role", "package", "seed"]
SUMMARY_METRICS = ("growth_rate_per_min", "doubling_time_min", "ribosomes_total", "atp_percent")
CI_LEVEL = 0.95


def batch_timeseries(specs: list[VMSpec], results: dict[str, dict]) -> pd.DataFrame:
    """One batch's rows of the tidy time series (built where the batch ran, so only a compact
    frame crosses the process boundary): identity columns first, then measurements."""
    frames = []
    for spec in specs:
        frame = pd.DataFrame(results[spec.vm_id]["timeseries"])
        for i, column in enumerate(ID_COLUMNS):
            frame.insert(i, column, getattr(spec, column))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def tidy_timeseries(batches: list[pd.DataFrame]) -> pd.DataFrame:
    """The batches' rows as one tidy frame: one row per VM x time point, in spec order."""
    tidy = pd.concat(batches, ignore_index=True)
    tidy["organism"] = tidy["organism"].astype("category")
    tidy["role"] = tidy["role"].astype("category")
    tidy["replicate"] = tidy["replicate"].astype("int64")
    tidy["seed"] = tidy["seed"].astype("Int64")  # None (deterministic) stays missing
    return tidy


def timeseries_frame(specs: list[VMSpec], results: dict[str, dict]) -> pd.DataFrame:
    """The tidy time series of `specs` from their process results (one batch or all)."""
    return tidy_timeseries([batch_timeseries(specs, results)])


def summary_frame(specs: list[VMSpec], metrics: dict[str, dict]) -> pd.DataFrame:
    """Per organism and role: mean, sd and 95 % interval of the final state over replicates,
    and the package's burden.

    The interval is the t-interval of the mean, mean ± t(0.975, n-1) * sd / sqrt(n); with
    one cell, sd and interval are missing. burden_percent (with its interval,
    `burden_interval`) = 100 * (1 - mean growth with the
    package / mean growth of the control VMs of the same organism and caps, without it).
    """
    rows = [
        {"organism": s.organism, "role": s.role,
         **{k: metrics[s.vm_id][k] for k in SUMMARY_METRICS},
         **{f"protein_{g}": v for g, v in metrics[s.vm_id]["protein_molecules"].items()}}
        for s in specs
    ]
    final = pd.DataFrame(rows)
    grouped = final.groupby(["organism", "role"], sort=False)
    summary = grouped.mean(numeric_only=True)
    n = grouped.size()
    summary.insert(0, "replicates", n)
    half = _t_quantile(n) / n.pow(0.5)
    for metric in SUMMARY_METRICS:
        sd = grouped[metric].std(ddof=1)
        column = summary.columns.get_loc(metric) + 1
        summary.insert(column, f"{metric}_sd", sd)
        summary.insert(column + 1, f"{metric}_ci95_low", summary[metric] - half * sd)
        summary.insert(column + 2, f"{metric}_ci95_high", summary[metric] + half * sd)
    summary = summary.reset_index()
    controls = summary[summary["role"] == "control"].set_index("organism")
    if not controls.empty:
        low, burden, high = burden_interval(summary, controls)
        cells = summary["role"] == "cell"
        # the key number, next to the organism it belongs to (cells only)
        summary.insert(1, "burden_percent", burden.where(cells))
        summary.insert(2, "burden_percent_ci95_low", low.where(cells))
        summary.insert(3, "burden_percent_ci95_high", high.where(cells))
    return summary


def burden_lines(summary: pd.DataFrame, stochastic: bool) -> list[str]:
    """One line per organism with a package: its burden and how sure it is (the 95 %
    interval, or why there is none)."""
    if "burden_percent" not in summary:
        return []
    controls = summary[summary["role"] == "control"].set_index("organism")["replicates"]
    lines = []
    for row in summary[summary["role"] == "cell"].itertuples():
        n, nc = int(row.replicates), int(controls.get(row.organism, 0))
        head = f"{row.organism}: burden {row.burden_percent:.1f} %"
        if not stochastic:
            lines.append(f"{head} (deterministic: exact for the model)")
        elif pd.notna(row.burden_percent_ci95_low):
            lines.append(f"{head}, 95 % interval {row.burden_percent_ci95_low:.1f} to "
                         f"{row.burden_percent_ci95_high:.1f} % ({n} cells, {nc} controls)")
        else:
            lines.append(f"{head} from {n} stochastic cell(s) against {nc} control(s): no "
                         "interval, and one cell's noise can even make it negative; use "
                         "--replicates 3 or more")
    return lines


def burden_interval(
    summary: pd.DataFrame, controls: pd.DataFrame
) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(low, burden, high) per summary row: burden = 100 (1 - R), R = mean growth with the
    package / mean growth of the controls, and its 95 % interval by the delta method,
    var R = R^2 (s_k^2 / (n_k m_k^2) + s_c^2 / (n_c m_c^2)), with Welch-Satterthwaite
    degrees of freedom. Missing (NaN) when either side is one cell: one stochastic cell
    has no spread to go by. Zero width for deterministic copies."""
    m = summary["growth_rate_per_min"]
    s = summary["growth_rate_per_min_sd"]
    n = summary["replicates"].astype(float)
    by = summary["organism"]
    mc = by.map(controls["growth_rate_per_min"])
    sc = by.map(controls["growth_rate_per_min_sd"])
    nc = by.map(controls["replicates"]).astype(float)
    ratio = m / mc
    a, b = s**2 / (n * m**2), sc**2 / (nc * mc**2)
    df = (a + b) ** 2 / (a**2 / (n - 1) + b**2 / (nc - 1))
    t = _t_quantile(df.fillna(0) + 1).where(a + b > 0, 0.0)
    half = 100.0 * t * ratio * (a + b) ** 0.5
    burden = 100.0 * (1 - ratio)
    return burden - half, burden, burden + half


def t_interval_half_width(sd: pd.Series, n: pd.Series) -> pd.Series:
    """Half the width of the two-sided 95 % t-interval of a mean of n values with sd (NaN
    for one value)."""
    return _t_quantile(n) / n.pow(0.5) * sd


def _t_quantile(n: pd.Series) -> pd.Series:
    """Student's t quantile for a two-sided 95 % interval with n - 1 degrees of freedom
    (NaN for one replicate, which has no interval: scipy is then not even imported)."""
    df = (n - 1).astype(float)
    if not (df > 0).any():
        return pd.Series(float("nan"), index=n.index)
    from scipy.special import stdtrit

    return pd.Series(stdtrit(df.where(df > 0), 0.5 + CI_LEVEL / 2), index=n.index)


LATEST = "latest"


def run_directory(out_dir: Path, run_name: str, run_id: str, now: datetime | None = None) -> Path:
    """`<out_dir>/<UTC date>-<flow run name>-<run tag>`: one directory per run.

    The run's tag (`run_context.run_tag`, the random end of its id) makes it unique (two runs,
    even created in the same millisecond, may share a name); the date and the name make it
    findable next to the run in the Prefect UI. Characters outside [A-Za-z0-9._+-] become
    '_', so a name can never leave `out_dir`.
    """
    day = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d")
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", run_name).strip("._") or "run"
    return out_dir / f"{day}-{name[:80]}-{run_tag(run_id)}"


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
    series: pd.DataFrame, summary: pd.DataFrame, png: bytes, out_dir: Path, *,
    csv: bool = False,
) -> dict[str, Path]:
    """Write the run's files into `out_dir` (a run directory of its own, see run_directory).

    Parquet always (the time series of a long run in a fraction of a second); the summary
    also as CSV (a few rows); the time series as CSV only when asked (`csv=True`), since
    `to_csv` takes ~15x as long as Parquet on large runs.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "timeseries_parquet": out_dir / "timeseries.parquet",
        "summary_parquet": out_dir / "summary.parquet",
        "summary_csv": out_dir / "summary.csv",
        "plot_png": out_dir / "growth.png",
    }
    series.to_parquet(paths["timeseries_parquet"], index=False)
    summary.to_parquet(paths["summary_parquet"], index=False)
    summary.to_csv(paths["summary_csv"], index=False)
    paths["plot_png"].write_bytes(png)
    if csv:
        paths["timeseries_csv"] = out_dir / "timeseries.csv"
        series.to_csv(paths["timeseries_csv"], index=False)
    return paths


def write_run_record(run_dir: Path, *, complete: bool, vms_done: int, vms: int) -> Path:
    """`run.json`: whether the run's results are complete or partial (a stopped run keeps
    what finished), so a reader never mistakes a partial folder for a whole run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "run.json"
    record = {"complete": complete, "state": "Completed" if complete else "Cancelled",
              "vms_done": vms_done, "vms": vms, **_flow_run_fields(),
              "written": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def _flow_run_fields() -> dict[str, str]:
    """The flow run's id and start time, when written from inside one (`bioxen results
    query` orders runs by `started`: folder dates have no time of day)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return {}
    run = context.flow_run
    started = run.start_time or run.expected_start_time
    fields = {"flow_run_id": str(run.id)}
    if started is not None:
        fields["started"] = started.isoformat()
    return fields


def preload_plotting() -> None:
    """Start importing matplotlib on a thread, while batches run (the flow process waits)."""
    threading.Thread(target=load_plotting, daemon=True).start()


def load_plotting() -> None:
    """Import matplotlib (~0.5-1 s) ahead of `plot_png`, e.g. on a thread while batches run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def plot_png(series: pd.DataFrame) -> bytes:
    """Growth rate (and guest protein, if any) over time per organism: the replicates' mean
    as a line, their spread (mean ± sd) as a band, the control cell as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    proteins = [c for c in series.columns if c.startswith("protein_")]
    dividing = "cell_size" in series.columns and series["generation"].max() > 0
    panels = 1 + bool(proteins) + dividing
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels if panels > 1 else 6, 4))
    axes = list(axes) if panels > 1 else [axes]
    columns = ["growth_rate_per_min", *proteins]
    stats = (series.groupby(["organism", "role", "time_min"], observed=True)[columns]
             .agg(["mean", "std"]))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, organism in enumerate(series["organism"].cat.categories
                                 if hasattr(series["organism"], "cat")
                                 else series["organism"].unique()):
        colour = colours[i % len(colours)]
        for role in ("cell", "control"):
            if (organism, role) not in stats.index.droplevel("time_min"):
                continue
            frame = stats.loc[(organism, role)]
            t = frame.index.to_numpy()
            style = {"color": colour, "linestyle": "--" if role == "control" else "-"}
            label = organism if role == "cell" else f"{organism} control"
            _line(axes[0], t, frame["growth_rate_per_min"], label, style)
            for protein in proteins:
                if frame[(protein, "mean")].notna().any():
                    _line(axes[1], t, frame[protein], f"{label} {protein[8:]}", style)
    banded = bool((stats[("growth_rate_per_min", "std")].fillna(0) > 0).any())
    axes[0].set(xlabel="simulated time (min)", ylabel="growth rate (1/min)",
                title="Growth (band: mean ± sd of replicates)" if banded else "Growth")
    if proteins:
        axes[1].set(xlabel="simulated time (min)", ylabel="molecules per cell",
                    title="Guest protein")
        axes[1].legend(fontsize=8)
    axes[0].legend(fontsize=8)
    if dividing:
        _lineages(axes[-1], series)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, facecolor="white")  # legible on dark UIs
    plt.close(fig)
    return buffer.getvalue()


def _lineages(ax: Any, series: pd.DataFrame) -> None:
    """The size of one dividing cell per organism (its first replicate): the sawtooth of
    growth and division that the means average away."""
    first = series[(series["role"] == "cell") & (series["replicate"] == 0)]
    for organism, cell in first.groupby("organism", observed=True):
        if cell["cell_size"].notna().any():
            ax.plot(cell["time_min"], cell["cell_size"], label=str(organism), linewidth=1)
    ax.set(xlabel="simulated time (min)", ylabel="cell size (mass / model's M)",
           title="One dividing cell per organism (replicate 0)")
    ax.legend(fontsize=8)


def _line(ax: Any, t: Any, stats: pd.DataFrame, label: str, style: dict[str, Any]) -> None:
    """The mean as a line and, where replicates differ, mean ± sd as a band around it."""
    mean, sd = stats["mean"].to_numpy(), stats["std"].to_numpy()
    ax.plot(t, mean, label=label, **style)
    if pd.notna(sd).any():
        ax.fill_between(t, mean - sd, mean + sd, color=style["color"], alpha=0.2, linewidth=0)


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


class ProgressArtifact:
    """A Prefect progress artifact (`<key>-progress`) showing the share of VMs finished."""

    def __init__(self, key: str, total: int) -> None:
        from prefect.artifacts import create_progress_artifact

        self.total = total
        self.id = create_progress_artifact(
            0.0, key=f"{key}-progress", description=f"VMs finished, of {total}"
        )

    def update(self, done: int) -> None:
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(self.id, 100.0 * done / max(self.total, 1),
                                 description=f"{done} of {self.total} VMs finished")


def _fmt(value: Any) -> str:
    """A markdown cell: 4 significant figures, `-` for a missing value (never `nan`)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
