"""Guest genes and the packages that carry them: data, and the names they may take.

A package is data (genes, their lengths and promoter strengths, operon membership,
plasmid copy number); `builder.py` turns it into model reactions and `packages.py` finds
one by name or reads a user's module. Nothing here compiles anything, so every layer of
the model can use these types.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from bioxen_flows.errors import InputError
from bioxen_flows.limits import IDENTIFIER, MAX_COPIES, MAX_STRENGTH, MIN_COPIES

# Names of the host model a guest gene id may not shadow (its m_/c_/p_ species would collide).
RESERVED_GENE_IDS = frozenset({"r", "t", "m", "q", "x", "i", "s", "p", "g"})
# Model ids the builder generates for each guest gene G (builder.gene_module_text).
GENERATED_PREFIXES = ("m_", "c_", "on_", "copies_", "tx_", "bind_", "unbind_", "tl_", "deg_m_",
              "dil_m_", "dil_c_", "dil_p_", "strength_")
# BioXen's namespace for packages: every id the builder generates for a gene or operon of
# ANY package (installed before or after a module) starts with one of these. A module may
# define none of them but its own genes' w_G, n_G, reg_G (and p_G in its own reactions), so
# it can neither create nor drive another package's species or parameters, whatever the
# order of installation.
RESERVED_PREFIXES = (*GENERATED_PREFIXES, "w_", "n_", "reg_", "p_", "induced_", "leak_")
RESERVED_IDS = frozenset({"guest_complexes"})


@dataclass(frozen=True)
class GuestGene:
    """One heterologous gene: transcription rate w per copy (molecules/min), length in aa."""

    gene_id: str
    length_aa: int
    max_transcription: float
    operon: str | None = None
    user_defined: bool = False  # w_/n_ (and optional reg_) come from the user's module text


@dataclass(frozen=True)
class Package:
    """An installable expression module ("biological package")."""

    name: str
    description: str
    genes: tuple[GuestGene, ...]
    copies: int = 1  # gene copies per cell: plasmid copy number for plasmid-borne genes
    # promoter strength: multiplies every gene's transcription (design-space sweeps)
    strength: float = 1.0
    plasmid: bool = False
    operon_leak: float = 0.01  # transcription of a repressed operon, fraction of induced
    antimony: str = ""  # extra model statements (user modules only)
    source: str = "built-in"
    # ids a user module defines -> how (compiled and checked in load_user_module)
    defines: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def sha256(self) -> str:
        """Content hash of a user module's model text (what a VM stores it under)."""
        return hashlib.sha256(self.antimony.encode("utf-8")).hexdigest()

    @property
    def operons(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(g.operon for g in self.genes if g.operon))

    def with_copies(self, copies: int) -> Package:
        if not MIN_COPIES <= copies <= MAX_COPIES:
            raise InputError(f"copies must be between {MIN_COPIES} and {MAX_COPIES}, got {copies}")
        return replace(self, copies=copies)

    def with_strength(self, strength: float) -> Package:
        if not 0 < strength <= MAX_STRENGTH:
            raise InputError(f"strength must be > 0 and <= {MAX_STRENGTH:g}, got {strength!r}")
        return replace(self, strength=float(strength))


# Lengths are the real proteins' (UniProt): sfGFP 238 aa, LacZ 1024, LacY 417, LacA 203,
# mCherry 236. Promoter strengths are in the host's units (w_e = 4.14 for a native
# metabolic gene, w_r = 930 for the ribosomal operons).
BUILTIN_PACKAGES: dict[str, Package] = {
    p.name: p
    for p in (
        Package(
            name="gfp_reporter",
            description="constitutive GFP reporter on the chromosome (strong promoter)",
            genes=(GuestGene("gfp", 238, 50.0),),
        ),
        Package(
            name="lac_operon",
            description="lacZYA under the lac promoter; repressed (1% leak) until induced",
            genes=(
                GuestGene("lacZ", 1024, 20.0, operon="lac"),
                GuestGene("lacY", 417, 20.0, operon="lac"),
                GuestGene("lacA", 203, 20.0, operon="lac"),
            ),
        ),
        Package(
            name="rfp_plasmid",
            description="mCherry on a medium-copy plasmid; transcription scales with copies",
            genes=(GuestGene("rfp", 236, 5.0),),
            copies=15,
            plasmid=True,
        ),
    )
}


def check_gene_id(gene_id: str, source: str = "package") -> None:
    if not IDENTIFIER.fullmatch(gene_id) or gene_id in RESERVED_GENE_IDS:
        raise InputError(
            f"{source}: invalid gene id {gene_id!r}: use letters, digits and _ (start with a "
            f"letter, at most 64), not one of {sorted(RESERVED_GENE_IDS)}"
        )
