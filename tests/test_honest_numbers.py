"""Numbers a biologist can trust (issue 26): labels that say what they mean, a missing value
written one way, a sweep report that says why no point qualified and heatmaps that mark the
limit and the best point. (The burden interval: tests/test_flows.py.)"""

from __future__ import annotations

import math

import pandas as pd

from bioxen_flows.cli import output
from bioxen_flows.cli.vms import alert_label
from bioxen_flows.orchestration import sweep_report
from bioxen_flows.resources.manager import alerts_for


def _summary() -> pd.DataFrame:
    """A 3 x 2 strength x copies grid: burden rises with the dose, yield most with strength."""
    rows = []
    for strength in (1.0, 2.0, 4.0):
        for copies in (1, 2):
            dose = strength * copies
            rows.append({"organism": "ecoli", "nutrient_molecules": 1e4, "strength": strength,
                         "copies": copies, "replicates": 1,
                         "protein_per_cell_per_hour": 100.0 * strength + 10.0 * copies,
                         "burden_percent": 3.0 * dose, "growth_rate_per_min": 0.02,
                         "doubling_time_min": 35.0, "protein_per_cell": 1.0})
    return pd.DataFrame(rows)


def test_ribosomes_over_their_cap_are_labelled_over_not_near() -> None:
    over = alerts_for({"ribosome_allocation_used_percent": 100 * 481 / 450,
                       "atp_percent": 80.0}, ribosomes_percent=90)
    near = alerts_for({"ribosome_allocation_used_percent": 95.0, "atp_percent": 80.0},
                      ribosomes_percent=90)
    assert [alert_label(a) for a in over] == ["ribosomes over cap (107 %)"]
    assert [alert_label(a) for a in near] == ["ribosomes near cap (95 %)"]
    low = alerts_for({"atp_percent": 12.0}, low_atp_percent=20)
    assert [alert_label(a) for a in low] == ["low ATP (12 %)"]


def test_a_missing_value_is_a_dash_in_text() -> None:
    assert output.number(float("nan")) == "-" and output.number(None) == "-"
    assert output.number(float("inf")) == "inf"
    from bioxen_flows.orchestration.reporting import markdown_summary

    table = markdown_summary(pd.DataFrame({"organism": ["ecoli"], "burden_percent":
                                           [math.nan]}), b"", "t")
    assert "| ecoli | - |" in table and "nan" not in table.lower().replace("organism", "")


def test_the_sweep_says_why_no_point_qualified() -> None:
    best = sweep_report.best_points(_summary(), max_burden=2.0)
    row = best.iloc[0]
    assert not row["within_burden_limit"]
    assert row["note"] == ("no point has burden <= 2 %: the lowest is 3 % (strength 1, copies "
                           "1); raise --max-burden or try weaker or fewer copies")
    report = {"best": best, "dataset": pd.DataFrame({"role": ["cell"], "reused": [False]}),
              "pngs": {}}
    assert row["note"] in sweep_report.markdown_report(report, 2.0, images=False)
    fig = sweep_report.heatmap_figure(_summary(), "ecoli", 2.0)
    (ax, _colorbar) = fig.axes
    assert "no point with burden <= 2 %" in ax.get_title()
    assert not [line for line in ax.get_lines() if line.get_marker() == "*"]


def test_the_heatmap_marks_the_limit_contour_and_the_best_point() -> None:
    summary = _summary()
    best = sweep_report.best_points(summary, max_burden=13.0).iloc[0]
    assert best["within_burden_limit"] and pd.isna(best["note"])
    assert (best["strength"], best["copies"]) == (4.0, 1)  # dose 4 (burden 12 %) is the top
    fig = sweep_report.heatmap_figure(summary, "ecoli", 13.0)
    ax = fig.axes[0]
    stars = [line for line in ax.get_lines() if line.get_marker() == "*"]
    assert len(stars) == 1
    # imshow cells: x is the strength's column (1, 2, 4 -> 2), y the copies' row (1 -> 0)
    assert (list(stars[0].get_xdata()), list(stars[0].get_ydata())) == ([2], [0])
    limits = [c for c in ax.collections if hasattr(c, "levels") and list(c.levels) == [13.0]]
    assert len(limits) == 1


def test_optimize_and_status_report_growth_the_same_way() -> None:
    """`optimize` says which growth is balanced (the caps' figures) and which is the cell's
    now, and that one is exactly what `status` reports; each cap's effect is shown."""
    from tests.helpers import data, ok

    ok("create", "m1", "minimal_cell")
    result = data("optimize", "m1")
    status = data("status", "m1")
    assert result["current_growth_rate_per_min"] == status["metrics"]["growth_rate_per_min"]
    assert status["allocations"] == {"atp_percent": result["atp_percent"],
                                     "ribosomes": result["ribosomes"]}
    for alone in ("atp_cap_alone_kept_fraction", "ribosome_cap_alone_kept_fraction"):
        assert result["growth_kept_fraction"] - 1e-9 <= result[alone] <= 1.0 + 1e-9
    text = " ".join(ok("optimize", "m1", env={"COLUMNS": "80"}).stdout.split())
    assert "alone keeps" in text and "as `status` shows it" in text
    assert "balanced growth" in text
