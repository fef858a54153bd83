"""Compose the model text of one cell (Antimony); `loader.py` compiles and loads it.

The host model is `weisse2015.ant`; an organism appends its parameter overrides and
each installed package appends expression modules of the same form as the host's
own sectors, so guest genes compete for the same free ribosomes and energy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources

from bioxen_flows.errors import NotFoundError
from bioxen_flows.model.guest import Package

MODEL_NAME = "whole_cell"  # the Antimony model's name in the text built here
MAX_W = 1e6  # a user gene's transcription, molecules/min per copy
MAX_N = 1e6  # a user gene's length, aa
_ENERGY_BLOCK = re.compile(r"  // <energy>.*?// </energy>\n", re.S)


@cache
def _model_file(name: str) -> str:
    return resources.files("bioxen_flows.model").joinpath(name).read_text(encoding="utf-8")


def host_model_text() -> str:
    """The published E. coli model exactly as written in weisse2015.ant."""
    return _model_file("weisse2015.ant")


@cache
def host_parameter(name: str) -> float:
    """A parameter's value as written in the host model (e.g. the cell mass `M`, aa)."""
    match = re.search(rf"^\s*{re.escape(name)}\s*=\s*([^;]+);", host_model_text(), re.M)
    if match is None:
        raise NotFoundError(f"the host model sets no parameter {name!r}")
    return float(match.group(1))


def gene_module_text(package: Package) -> str:
    """Reactions for each guest gene: transcription, ribosome binding, translation, decay."""
    lines = [f"  // ---- package {package.name}: {package.description} ----"]
    if package.antimony:
        lines.append(package.antimony)
    for operon in package.operons:
        lines.append(f"  induced_{operon} = 0; leak_{operon} = {package.operon_leak!r};")
    for gene in package.genes:
        g = gene.gene_id
        lines.append(f"  species m_{g} in cell, c_{g} in cell, p_{g} in cell;")
        if not gene.user_defined:
            lines.append(f"  w_{g} = {gene.max_transcription!r}; n_{g} = {gene.length_aa};")
        factors = [f"on_{g}", f"copies_{g}"]
        if gene.operon:
            factors.append(f"(leak_{gene.operon} + (1 - leak_{gene.operon})*induced_{gene.operon})")
        if gene.user_defined and re.search(rf"\breg_{g}\s*:=", package.antimony):
            factors.append(f"max(0, min(1, reg_{g}))")
        factors.append(f"strength_{g}")
        # A module's w_G, n_G, reg_G may be rules of anything: clamped where they feed the
        # host's reactions, so transcription and translation stay physical (docs/api.md).
        w, n = (f"max(0, min({MAX_W:g}, w_{g}))", f"max(1, min({MAX_N:g}, n_{g}))") if (
            gene.user_defined) else (f"w_{g}", f"n_{g}")
        lines += [
            # copies and strength are parameters set after the model loads (the cell's
            # `package_parameters`): one compiled model serves every value of them
            f"  on_{g} = 1; copies_{g} = 1; strength_{g} = 1;",
            f"  tx_{g}: -> m_{g}; {'*'.join(factors)}*{w}*a/(theta_nr + a);",
            f"  bind_{g}: r + m_{g} -> c_{g}; k_b*r*m_{g};",
            f"  unbind_{g}: c_{g} -> r + m_{g}; k_u*c_{g};",
            f"  tl_{g}: c_{g} -> r + m_{g} + p_{g}; elong*c_{g}/{n};",
            f"  deg_m_{g}: m_{g} -> ; d_m*m_{g};",
            f"  dil_m_{g}: m_{g} -> ; lam*m_{g};",
            f"  dil_c_{g}: c_{g} -> ; lam*c_{g};",
            f"  dil_p_{g}: p_{g} -> ; lam*p_{g};",
            f"  m_{g} = 0; c_{g} = 0; p_{g} = 0;",
        ]
    return "\n".join(lines)


def package_parameters(packages: Iterable[Package]) -> dict[str, float]:
    """The model parameters that carry each installed gene's copies and strength."""
    values: dict[str, float] = {}
    for package in packages:
        for gene in package.genes:
            values[f"copies_{gene.gene_id}"] = float(package.copies)
            values[f"strength_{gene.gene_id}"] = float(package.strength)
    return values


def build_model_text(
    parameters: Mapping[str, float] | None = None,
    packages: Iterable[Package] = (),
    stochastic: bool = False,
) -> str:
    """Host model + organism overrides + guest modules, as one Antimony model.

    A package's copies and strength are not in the text (they are 1 there): set them with
    `package_parameters` once the model is loaded, so one compiled model serves them all."""
    text = host_model_text()
    if stochastic:
        text = _ENERGY_BLOCK.sub(lambda _: _model_file("energy_qss.ant"), text, count=1)
    packages = list(packages)
    extra = [gene_module_text(p) for p in packages]
    complexes = [f"c_{g.gene_id}" for p in packages for g in p.genes]
    if complexes:
        extra.append(f"  guest_complexes := {' + '.join(complexes)};")
    if parameters:
        extra.append("  // ---- organism parameter overrides (docs/model.md) ----")
        extra += [f"  {name} = {value!r};" for name, value in parameters.items()]
    head, _, _ = text.rstrip().rpartition("end")
    return head + "\n".join(extra) + "\nend\n"
