"""Reproduce Weiße et al. 2015's burden curve with a design-space sweep (docs/model.md).

The paper's heterologous protein p (w_p = 100 molecules/min at strength 1, 300 aa) is swept
over promoter strength in E. coli with the sweep-design-space flow; the figure shows growth
rate and protein yield (per cell per hour) against transcription w_p, with the paper's
published growth rates beside the model's, and the optimum refined between the grid's
strengths (`refine=True`, the CLI's `--refine`).

    python docs/figures/reproduce_weisse2015.py        # writes docs/figures/weisse2015_burden.png
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
W_P = 100.0  # the paper's heterologous transcription rate at strength 1, molecules/min
# Published values (Weiße et al. 2015, PNAS 112:E1038; docs/model.md): growth rate, 1/min.
PAPER = {0.0: 0.02411, 100.0: 0.0112}


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from bioxen_flows.orchestration.sweep import sweep_design_space

    with tempfile.TemporaryDirectory() as tmp:
        module = Path(tmp) / "het.ant"
        module.write_text(f"// Weisse 2015 heterologous protein p\nw_het = {W_P!r}; n_het = 300;\n")
        result = sweep_design_space(
            organisms=["ecoli"], package=str(module),
            strengths=[0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0], copies=[1],
            hours=168.0, out_dir=str(Path(tmp) / "out"), max_burden=100.0, refine=True,
        )
        data = pd.read_parquet(Path(result["out_dir"]) / "points")
    [refined] = result["best"]
    control = data[data["role"] == "control"].iloc[0]
    cells = data[data["role"] == "cell"].sort_values("strength")
    w = cells["strength"] * W_P
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.semilogx(w, cells["growth_rate_per_min"], "o-", label="BioXen (sweep)")
    left.axhline(control["growth_rate_per_min"], color="grey", lw=0.8, label="no heterologous gene")
    left.plot([100.0], [PAPER[100.0]], "r*", ms=14, label="Weiße 2015, w_p = 100")
    left.axhline(PAPER[0.0], color="r", ls=":", lw=1, label="Weiße 2015, w_p = 0")
    left.set(xlabel="heterologous transcription w_p (molecules/min)",
             ylabel="growth rate λ (1/min)", title="Burden: growth falls with expression")
    left.legend(fontsize=8)
    right.semilogx(w, cells["protein_per_cell_per_hour"], "o-")
    best = cells.loc[cells["protein_per_cell_per_hour"].idxmax()]
    right.axvline(best["strength"] * W_P, color="grey", ls="--", lw=0.8, label="best grid point")
    right.plot([refined["refined_strength"] * W_P],
               [refined["refined_protein_per_cell_per_hour"]], "r*", ms=12,
               label="refined optimum (--refine)")
    right.legend(fontsize=8)
    right.set(xlabel="heterologous transcription w_p (molecules/min)",
              ylabel="protein p per cell per hour (molecules/h)",
              title="Yield peaks at intermediate expression")
    fig.tight_layout()
    fig.savefig(HERE / "weisse2015_burden.png", dpi=90)
    print(cells[["strength", "growth_rate_per_min", "burden_percent", "protein_per_cell",
                 "protein_per_cell_per_hour"]].assign(w_p=w).to_string(index=False))
    print(f"control growth {control['growth_rate_per_min']:.6f} 1/min; on the grid the yield "
          f"is highest at w_p = {best['strength'] * W_P:g} "
          f"({best['protein_per_cell_per_hour']:.6g}/h); refined: w_p = "
          f"{refined['refined_strength'] * W_P:.4g} "
          f"({refined['refined_protein_per_cell_per_hour']:.6g}/h, burden "
          f"{refined['refined_burden_percent']:.3g} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
