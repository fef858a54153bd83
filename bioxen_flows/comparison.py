"""Compare organisms on the embedded engine: tidy time series and a per-organism summary.

This is the product's main job; the Prefect flow fans the same work out over VMs.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from bioxen_flows.engine.cell import Cell

SUMMARY_COLUMNS = [
    "growth_rate_per_min",
    "doubling_time_min",
    "ribosomes_total",
    "ribosome_utilization_percent",
    "atp_percent",
]


def compare_organisms(
    organisms: Sequence[str] = ("syn3a", "ecoli", "minimal_cell"),
    hours: float = 2.0,
    package: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Grow one cell per organism for `hours`; returns (time series, summary).

    The summary's `burden_percent` is the growth lost to the package relative to the same
    organism without it (0 when no package is installed).
    """
    if not organisms:
        raise ValueError("give at least one organism")
    if not 0 < hours <= 168:
        raise ValueError(f"hours must be > 0 and <= 168, got {hours}")
    frames, rows = [], []
    for organism in organisms:
        cell = Cell(organism)
        host_growth = cell.metrics()["growth_rate_per_min"]
        if package:
            cell.install(package)
        frame = cell.grow(hours * 60).to_frame()
        frame.insert(0, "organism", organism)
        frames.append(frame)
        metrics = cell.metrics()
        row = {"organism": organism, **{k: metrics[k] for k in SUMMARY_COLUMNS}}
        growth = metrics["growth_rate_per_min"]
        row["burden_percent"] = 100.0 * (1 - growth / host_growth) if package else 0.0
        for gene, molecules in metrics["protein_molecules"].items():
            row[f"protein_{gene}"] = molecules
        rows.append(row)
    return pd.concat(frames, ignore_index=True), pd.DataFrame(rows)
