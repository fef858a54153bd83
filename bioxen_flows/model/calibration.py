"""Re-derive the fitted parameters of syn3a and minimal_cell (docs/model.md explains why).

Syn3A: cell mass M and transporter rate v_t are fitted so that balanced growth gives a
105-minute doubling with 500 ribosomes. minimal_cell (JCVI-syn3.0) keeps Syn3A's cell
and lowers v_t to reach its 180-minute doubling. Run: python -m bioxen_flows.model.calibration
Needs scipy (installed with the `test` extra).
"""

from __future__ import annotations

import math

from bioxen_flows.model.builder import build_model_text
from bioxen_flows.model.loader import load_roadrunner


def balanced_growth(parameters: dict[str, float]) -> tuple[float, float]:
    """(doubling time in min, total ribosomes) at balanced growth for these overrides."""
    rr = load_roadrunner(build_model_text(parameters))
    rr.simulate(0, 2e5, 2)
    return math.log(2) / rr["lam"], rr["ribosomes_total"]


def fit_syn3a(doubling_min: float = 105.0, ribosomes: float = 500.0) -> dict[str, float]:
    from scipy.optimize import least_squares

    def residuals(x):
        td, rib = balanced_growth({"M": math.exp(x[0]), "v_t": math.exp(x[1])})
        return [math.log(td / doubling_min), math.log(rib / ribosomes)]

    fit = least_squares(residuals, x0=[math.log(3e7), math.log(100.0)], xtol=1e-12, ftol=1e-12)
    return {"M": float(f"{math.exp(fit.x[0]):.6g}"), "v_t": float(f"{math.exp(fit.x[1]):.6g}")}


def fit_minimal_cell(syn3a: dict[str, float], doubling_min: float = 180.0) -> dict[str, float]:
    from scipy.optimize import brentq

    def gap(log_vt: float) -> float:
        td, _ = balanced_growth({**syn3a, "v_t": math.exp(log_vt)})
        return math.log(td / doubling_min)

    log_vt = brentq(gap, math.log(syn3a["v_t"]) - 5, math.log(syn3a["v_t"]), xtol=1e-12)
    return {**syn3a, "v_t": float(f"{math.exp(log_vt):.6g}")}


def main() -> None:
    syn3a = fit_syn3a()
    minimal = fit_minimal_cell(syn3a)
    for name, params in (("syn3a", syn3a), ("minimal_cell", minimal)):
        td, rib = balanced_growth(params)
        print(f"{name}: {params}  doubling {td:.2f} min, ribosomes {rib:.0f}")


if __name__ == "__main__":
    main()
