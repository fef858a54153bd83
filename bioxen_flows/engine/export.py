"""A cell's whole model as standalone Antimony or SBML, its current state as initial values.

What another simulator (a bare libroadrunner, COPASI, tellurium) needs to continue the
cell: the host model, the organism's parameters, every installed package, the caps and
switches (as parameter values) and every species amount at the cell's clock (as initial
amounts). Time in the exported model starts at 0, which is the cell's current clock.
"""

from __future__ import annotations

from typing import Any

from bioxen_flows.engine.cell import Cell
from bioxen_flows.errors import InputError
from bioxen_flows.model.builder import package_parameters
from bioxen_flows.model.loader import antimony_to_sbml

FORMATS = ("sbml", "antimony")


def state_block(snapshot: dict[str, Any]) -> list[str]:
    """Antimony assignments that set the snapshot's settings and species amounts."""
    lines = [
        f"  // ---- state at simulated minute {float(snapshot['time']):g} "
        "(time 0 of this model) ----",
    ]
    for title, values in (("caps, nutrient and switches (parameters)", snapshot["settings"]),
                          ("species amounts, molecules per cell", snapshot["species"])):
        lines.append(f"  // {title}")
        lines += [f"  {name} = {float(value)!r};" for name, value in sorted(values.items())]
    return lines


def export_antimony(snapshot: dict[str, Any]) -> str:
    """The cell's model text with its current state appended as initial values."""
    cell = Cell.from_snapshot(snapshot)  # validates the snapshot and rebuilds its model text
    text = cell.model_text().rstrip()
    head, _, _ = text.rpartition("end")
    packages = [f"  {name} = {value!r};"
                for name, value in package_parameters(cell.packages).items()]
    if packages:
        packages.insert(0, "  // ---- package copies and promoter strengths ----")
    header = (
        f"// BioXen Flows export: {cell.profile.biological_type} cell, "
        f"{'stochastic (energy at quasi-steady state)' if cell.stochastic else 'deterministic'}"
        f" model, packages: {', '.join(p.name for p in cell.packages) or 'none'}\n"
    )
    return header + head + "\n".join(packages + state_block(snapshot)) + "\nend\n"


def export_model(snapshot: dict[str, Any], fmt: str) -> str:
    """The snapshot's cell as `sbml` (level 3, from libAntimony) or `antimony` text."""
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    text = export_antimony(snapshot)
    return text if fmt == "antimony" else antimony_to_sbml(text)
