"""Biological packages: guest genes that a VM's cell expresses with its own ribosomes.

A package is data (genes, their lengths and promoter strengths, operon membership,
plasmid copy number); `builder.py` turns it into model reactions. Built-in packages
cover the three expression modes the product needs; users add their own modules
from Antimony or SBML files (see `load_user_module`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path

GENE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
# Names of the host model a guest gene id may not shadow (its m_/c_/p_ species would collide).
RESERVED_GENE_IDS = frozenset({"r", "t", "m", "q", "x", "i", "s", "p", "g"})
# Host symbols a user module may read but never define.
HOST_SYMBOLS = frozenset(
    {
        "a", "r", "s_i", "s0", "e_t", "e_m", "q", "lam", "elong", "translating",
        "ribosomes_total", "atp_percent", "guest_complexes", "M", "k_b", "k_u", "d_m",
        "theta_nr", "theta_r", "gamma_max", "K_gamma", "atp_scale", "ribosome_cap", "cell",
    }
)


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
    plasmid: bool = False
    operon_leak: float = 0.01  # transcription of a repressed operon, fraction of induced
    antimony: str = ""  # extra model statements (user modules only)
    source: str = "built-in"

    @property
    def sha256(self) -> str:
        """Content hash of a user module's model text (what a VM stores it under)."""
        return hashlib.sha256(self.antimony.encode("utf-8")).hexdigest()

    @property
    def operons(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(g.operon for g in self.genes if g.operon))

    def with_copies(self, copies: int) -> Package:
        if not 1 <= copies <= 1000:
            raise ValueError(f"copies must be between 1 and 1000, got {copies}")
        return replace(self, copies=copies)


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


def resolve_package(name_or_path: str | Path, copies: int | None = None) -> Package:
    """A built-in package by name, or a user module from an .ant/.sbml/.xml file."""
    key = str(name_or_path)
    if key in BUILTIN_PACKAGES:
        package = BUILTIN_PACKAGES[key]
    elif Path(key).suffix.lower() in {".ant", ".txt", ".sbml", ".xml"}:
        package = load_user_module(Path(key))
    else:
        raise ValueError(
            f"unknown package {key!r}; built-in packages: {', '.join(BUILTIN_PACKAGES)}; "
            "or give a path to an Antimony (.ant) or SBML (.xml/.sbml) module"
        )
    return package if copies is None else package.with_copies(copies)


_ASSIGNED = re.compile(r"^\s*(?:var\s+|const\s+|species\s+)?([A-Za-z_]\w*)\s*(?:=|:=|'\s*=)")
_W_PARAM = re.compile(r"\bw_([A-Za-z][A-Za-z0-9_]*)\s*=")


def load_user_module(path: Path) -> Package:
    """Read a user's expression module.

    Convention: for each gene G the module defines `w_G` (transcription, molecules/min)
    and `n_G` (length, aa); it may define `reg_G := ...` (0..1, multiplies transcription,
    e.g. repression by another guest protein `p_H`) and further reactions on its proteins.
    It may read host symbols (a, r, lam, elong, ...) but not define them.
    """
    path = path.resolve()  # a relative path means where the user stood when installing
    if not path.is_file():
        raise ValueError(f"package file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in {".sbml", ".xml"}:
        from bioxen_flows.model.builder import sbml_to_antimony_body

        body = sbml_to_antimony_body(text, source=str(path))
    else:
        body = _strip_model_wrapper(text)
    return user_module(path.stem, body, source=str(path))


def user_module(name: str, body: str, source: str) -> Package:
    """A user module from its Antimony statements (read once, at install; stored with the
    VM by content, so later loads never read the user's file again)."""
    path = source
    for lineno, line in enumerate(body.splitlines(), start=1):
        match = _ASSIGNED.match(line.split("//")[0])
        if match and match.group(1) in HOST_SYMBOLS:
            raise ValueError(
                f"{path}: line {lineno}: a module may not define host symbol "
                f"{match.group(1)!r} (it may only read it)"
            )
        if re.match(r"^\s*(model|module|import|end)\b", line):
            raise ValueError(f"{path}: line {lineno}: nested models and imports are not allowed")
    genes = []
    for gene_id in dict.fromkeys(_W_PARAM.findall(body)):
        if not re.search(rf"\bn_{gene_id}\s*=", body):
            raise ValueError(f"{path}: gene {gene_id!r} has w_{gene_id} but no n_{gene_id}")
        check_gene_id(gene_id, source=str(path))
        genes.append(GuestGene(gene_id, 0, 0.0, user_defined=True))
    if not genes:
        raise ValueError(
            f"{path}: no genes found; declare each gene G with w_G (molecules/min) and n_G (aa)"
        )
    return Package(
        name=name,
        description=f"user module from {Path(source).name}",
        genes=tuple(genes),
        antimony=body,
        source=source,
    )


def check_gene_id(gene_id: str, source: str = "package") -> None:
    if not GENE_ID.match(gene_id) or gene_id in RESERVED_GENE_IDS:
        raise ValueError(
            f"{source}: invalid gene id {gene_id!r}: use letters, digits and _ (start with a "
            f"letter, at most 64), not one of {sorted(RESERVED_GENE_IDS)}"
        )


def _strip_model_wrapper(text: str) -> str:
    """Accept either a bare list of statements or a single `model ... end` block."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(r"^\s*model\b", line)]
    if not starts:
        return text
    ends = [i for i, line in enumerate(lines) if re.match(r"^\s*end\s*$", line)]
    if len(starts) != 1 or not ends:
        raise ValueError("a module file must hold statements or exactly one model ... end block")
    return "\n".join(lines[starts[0] + 1 : ends[-1]])

