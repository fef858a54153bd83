"""Bio-VM engine: the cell, its hypervisor, the process language and its execution."""

# The ribosome cap of a cell nobody capped: the default of `ribosome_cap` in
# model/weisse2015.ant (far above any cell, so 1 - (R/cap)^8 is exactly 1).
UNCAPPED_RIBOSOMES = 1e12
FULL_ATP_PERCENT = 100.0



def snapshot_under_caps(snapshot: dict, atp_percent: float, ribosomes: float) -> dict:
    """A cell snapshot (with its recorded metrics) after new caps, without the model: the
    caps are rate parameters, so at the same state only the figures that report them change."""
    settings = {**snapshot.get("settings", {}), "atp_scale": atp_percent / 100.0,
                "ribosome_cap": float(ribosomes)}
    metrics = {**snapshot["metrics"], "atp_cap_percent": float(atp_percent),
               "ribosome_cap": float(ribosomes)}
    return {**snapshot, "settings": settings, "metrics": metrics}
