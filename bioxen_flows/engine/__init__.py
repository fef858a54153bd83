"""Bio-VM engine: the cell, its hypervisor, the process language and its execution."""

# The ribosome cap of a cell nobody capped: the default of `ribosome_cap` in
# model/weisse2015.ant (far above any cell, so 1 - (R/cap)^8 is exactly 1).
UNCAPPED_RIBOSOMES = 1e12
FULL_ATP_PERCENT = 100.0
# Engines of stochastic cells: the exact direct method compiled from the cell's model (the
# default; cells grow and divide), and libroadrunner's Gillespie (the reference; fixed size).
STOCHASTIC_ENGINES = ("compiled", "roadrunner")


def cap_settings(atp_percent: float | None = None,
                 ribosomes: float | None = None) -> dict[str, float]:
    """The model parameters that carry the caps (as a cell's settings keep them)."""
    settings = {}
    if atp_percent is not None:
        settings["atp_scale"] = atp_percent / 100.0
    if ribosomes is not None:
        settings["ribosome_cap"] = float(ribosomes)
    return settings


def snapshot_under_caps(snapshot: dict, atp_percent: float, ribosomes: float) -> dict:
    """A cell snapshot (with its recorded metrics) after new caps, without the model: the
    caps are rate parameters, so at the same state only the figures that report them change
    (computed as `Cell.metrics` computes them)."""
    settings = {**snapshot.get("settings", {}), **cap_settings(atp_percent, ribosomes)}
    metrics = {**snapshot["metrics"], "atp_cap_percent": 100.0 * settings["atp_scale"],
               "ribosome_cap": settings["ribosome_cap"]}
    return {**snapshot, "settings": settings, "metrics": metrics}
