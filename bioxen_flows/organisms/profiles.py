"""Organism profiles: reference facts with sources, model parameter overrides, and what
each organism's VMs and programs may do (its capabilities and process-language calls).

The facts and overrides are data (profiles.yaml) so that a reviewer can check each
number against its reference without reading code, and so that the VM API and the
process language read the same table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import yaml

from bioxen_flows.errors import InputError


@dataclass(frozen=True)
class OrganismCapabilities:
    """Which organism-specific calls an organism supports (composition, not subclasses)."""

    transcription_control: bool = False
    essential_genes: bool = False
    operons: bool = False
    plasmids: bool = False


CAPABILITIES = tuple(OrganismCapabilities.__dataclass_fields__)


@dataclass(frozen=True)
class OrganismProfile:
    """One organism: what the literature says about it and how the model is tuned to it."""

    biological_type: str
    name: str
    genome_bp: int
    genes: int
    protein_coding_genes: int | None
    rna_genes: int | None
    essential_gene_candidates: int | None
    doubling_time_target_min: float
    ribosomes_target: float | None
    references: tuple[str, ...]
    parameters: dict[str, float] = field(default_factory=dict)
    # A dividing stochastic cell divides once it has made this much protein since birth,
    # as a fraction of the model's cell mass M (an adder; profiles.yaml gives the source).
    division_added_mass: float = 0.6931471805599453
    capabilities: OrganismCapabilities = OrganismCapabilities()
    process_calls: frozenset[str] = frozenset()  # what its process programs may call


@cache
def organism_profiles() -> dict[str, OrganismProfile]:
    """All profiles, keyed by biological_type (read once from the packaged YAML)."""
    source = resources.files("bioxen_flows.organisms").joinpath("profiles.yaml")
    text = source.read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    return {
        key: OrganismProfile(
            biological_type=key,
            references=tuple(entry.pop("references")),
            parameters={k: float(v) for k, v in (entry.pop("parameters") or {}).items()},
            capabilities=_capabilities(key, entry.pop("capabilities", None) or []),
            process_calls=frozenset(entry.pop("process_calls", None) or []),
            **entry,
        )
        for key, entry in raw.items()
    }


def _capabilities(organism: str, names: list[str]) -> OrganismCapabilities:
    unknown = sorted(set(names) - set(CAPABILITIES))
    if unknown:  # a typo in profiles.yaml must not silently take a call away
        raise InputError(f"profiles.yaml: {organism} names unknown capabilities {unknown}; "
                         f"known: {', '.join(CAPABILITIES)}")
    return OrganismCapabilities(**dict.fromkeys(names, True))


def get_supported_biological_types() -> list[str]:
    return list(organism_profiles())


def get_profile(biological_type: str) -> OrganismProfile:
    """The profile of one organism; a clear InputError names the valid choices."""
    profiles = organism_profiles()
    if biological_type not in profiles:
        raise InputError(
            f"unknown biological_type {biological_type!r}; choose one of: {', '.join(profiles)}"
        )
    return profiles[biological_type]


def organisms_with(capability: str) -> list[str]:
    """The organisms that support `capability` (one of `CAPABILITIES`), in profile order."""
    return [key for key, profile in organism_profiles().items()
            if getattr(profile.capabilities, capability)]
