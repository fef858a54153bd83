"""Genome annotation loaded from GenBank, so organism models are built from real gene lists.

Gene counts come from the annotation itself; essentiality comes only from data the user
loads (e.g. the Breuer et al. 2019 eLife table for JCVI-Syn3A), never from name heuristics.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from Bio import SeqIO
from Bio.SeqFeature import SeqFeature

from bioxen_flows.errors import InputError, NotFoundError

RNA_TYPES = ("tRNA", "rRNA", "ncRNA", "tmRNA", "misc_RNA")
MAX_GENBANK_BYTES = 32 * 1024 * 1024  # an E. coli K-12 record with sequence is ~12 MB
MAX_ESSENTIALITY_BYTES = 8 * 1024 * 1024
_ESSENTIALITY_ALIASES = {
    "essential": "essential",
    "quasiessential": "quasiessential",
    "quasi": "quasiessential",
    "nonessential": "nonessential",
    "non": "nonessential",
}


class EssentialityUnavailableError(InputError):
    """Raised when essentiality is requested but no essentiality data was loaded."""


@dataclass(frozen=True)
class Gene:
    locus_tag: str
    name: str | None
    product: str | None
    kind: str
    start: int
    end: int
    strand: int
    length_bp: int
    length_aa: int | None = None


@dataclass(frozen=True)
class Genome:
    accession: str
    description: str
    length_bp: int
    genes: tuple[Gene, ...] = field(repr=False)
    essentiality: Mapping[str, str] | None = field(default=None, repr=False, hash=False)

    @property
    def protein_coding_genes(self) -> list[Gene]:
        return [g for g in self.genes if g.kind == "protein_coding"]

    @property
    def rna_genes(self) -> list[Gene]:
        return [g for g in self.genes if g.kind in RNA_TYPES]

    def gene(self, locus_tag_or_name: str) -> Gene:
        """Look a gene up by locus tag, else by /gene name (which must be unambiguous)."""
        for g in self.genes:
            if g.locus_tag == locus_tag_or_name:
                return g
        hits = [g for g in self.genes if g.name == locus_tag_or_name]
        if len(hits) == 1:
            return hits[0]
        if hits:
            tags = ", ".join(g.locus_tag for g in hits)
            raise InputError(f"gene name {locus_tag_or_name!r} is ambiguous in {self.accession}: "
                             f"use one of the locus tags {tags}")
        raise NotFoundError(
            f"no gene with locus tag or name {locus_tag_or_name!r} in {self.accession}")

    def summary(self) -> dict[str, object]:
        return {
            "accession": self.accession,
            "length_bp": self.length_bp,
            "protein_coding": len(self.protein_coding_genes),
            "rna": len(self.rna_genes),
            "pseudogenes": sum(g.kind == "pseudogene" for g in self.genes),
            "total_genes": len(self.genes),
        }

    def to_records(self) -> list[dict[str, object]]:
        """One dict per gene (pandas-friendly); adds `essentiality` when data was loaded."""
        records = [asdict(g) for g in self.genes]
        if self.essentiality is not None:
            for rec in records:
                rec["essentiality"] = self.essentiality.get(rec["locus_tag"])
        return records

    def with_essentiality(self, mapping: Mapping[str, str]) -> Genome:
        """Return a copy carrying `locus_tag -> essentiality` (values are normalized)."""
        known = {g.locus_tag for g in self.genes}
        unknown = sorted(tag for tag in mapping if tag not in known)
        if unknown:
            raise InputError(f"{len(unknown)} locus tag(s) not in {self.accession}: "
                             f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
        clean = {}
        for tag, value in mapping.items():
            norm = _normalize_essentiality(value)
            if norm is None:
                raise InputError(f"bad essentiality value {value!r} for {tag}")
            clean[tag] = norm
        return replace(self, essentiality=MappingProxyType(clean))

    def essential_genes(self, include_quasi: bool = False) -> list[Gene]:
        if self.essentiality is None:
            raise EssentialityUnavailableError(
                f"no essentiality data loaded for {self.accession}: load a CSV with "
                "load_essentiality_csv() (e.g. from Breuer et al. 2019 eLife for JCVI-Syn3A) "
                "and attach it with Genome.with_essentiality()")
        wanted = {"essential", "quasiessential"} if include_quasi else {"essential"}
        return [g for g in self.genes if self.essentiality.get(g.locus_tag) in wanted]


def _normalize_essentiality(value: object) -> str | None:
    key = str(value).strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    return _ESSENTIALITY_ALIASES.get(key)


def _first(qualifiers: dict, key: str) -> str | None:
    values = qualifiers.get(key)
    return values[0] if values else None


def _is_pseudo(qualifiers: dict) -> bool:
    return "pseudo" in qualifiers or "pseudogene" in qualifiers


def load_genbank(path: str | Path) -> Genome:
    """Load a genome from a GenBank file.

    Only the FIRST record is used for multi-record files. Genes are matched to their CDS or
    RNA feature by locus_tag; a CDS (or gene) marked /pseudo or /pseudogene is a pseudogene.
    """
    import io
    import warnings

    from Bio import BiopythonParserWarning

    from bioxen_flows.files import read_text_file

    path = Path(path)
    text = read_text_file(path, max_bytes=MAX_GENBANK_BYTES, what="GenBank file")
    try:
        with warnings.catch_warnings():
            # a location Biopython cannot read is an error here, not a warning and a None
            warnings.simplefilter("error", BiopythonParserWarning)
            record = next(SeqIO.parse(io.StringIO(text), "genbank"), None)
    except Exception as exc:  # Biopython raises various parser errors
        raise InputError(f"{path} is not a valid GenBank file: {_one_line(exc)}") from None
    if record is None:
        raise InputError(f"{path} is not a GenBank file (no LOCUS record found)")
    try:
        return _genome_of(record)
    except (TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{path}: a feature cannot be read: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _genome_of(record) -> Genome:  # record: Bio.SeqRecord.SeqRecord
    gene_feats: dict[str, SeqFeature] = {}
    product_feats: dict[str, SeqFeature] = {}
    for feat in record.features:
        tag = _first(feat.qualifiers, "locus_tag")
        if tag is None:
            continue
        if feat.type == "gene":
            gene_feats.setdefault(tag, feat)
        elif feat.type == "CDS" or feat.type in RNA_TYPES:
            product_feats.setdefault(tag, feat)

    genes = []
    for tag in dict.fromkeys([*gene_feats, *product_feats]):
        gfeat, pfeat = gene_feats.get(tag), product_feats.get(tag)
        feat = pfeat or gfeat
        if feat.location is None:
            raise InputError(f"feature {tag!r} has no readable location")
        if not 0 <= int(feat.location.start) <= int(feat.location.end) <= len(record.seq):
            raise InputError(f"feature {tag!r} lies outside the {len(record.seq):,} bp record")
        gq = gfeat.qualifiers if gfeat is not None else {}
        pq = pfeat.qualifiers if pfeat is not None else {}
        length_bp = len(feat.location)
        length_aa = None
        if _is_pseudo(pq) or _is_pseudo(gq):
            kind = "pseudogene"
        elif pfeat is None:
            kind = "other"
        elif pfeat.type == "CDS":
            kind = "protein_coding"
            translation = _first(pq, "translation")
            length_aa = len(translation) if translation else (length_bp - 3) // 3
        else:
            kind = pfeat.type
        genes.append(Gene(
            locus_tag=tag, name=_first(pq, "gene") or _first(gq, "gene"),
            product=_first(pq, "product"), kind=kind, start=int(feat.location.start),
            end=int(feat.location.end), strand=feat.location.strand or 0,
            length_bp=length_bp, length_aa=length_aa))
    return Genome(accession=record.id, description=record.description,
                  length_bp=len(record.seq), genes=tuple(genes))


def load_essentiality_csv(path: str | Path) -> dict[str, str]:
    """Read a CSV with `locus_tag` and `essentiality` columns into a normalized mapping."""
    import io

    from bioxen_flows.files import read_text_file

    path = Path(path)
    text = read_text_file(path, max_bytes=MAX_ESSENTIALITY_BYTES, what="essentiality CSV")
    try:
        return _essentiality_rows(io.StringIO(text, newline=""), path)
    except csv.Error as exc:
        raise InputError(f"{path}: not a CSV file: {exc}") from None


def _essentiality_rows(fh, path: Path) -> dict[str, str]:
    reader = csv.DictReader(fh)
    columns = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
    if "locus_tag" not in columns or "essentiality" not in columns:
        raise InputError(f"{path}: header must contain 'locus_tag' and 'essentiality' "
                         f"columns, got {reader.fieldnames}")
    mapping = {}
    for row in reader:
        tag = (row[columns["locus_tag"]] or "").strip()
        raw = row[columns["essentiality"]]
        value = _normalize_essentiality(raw) if raw is not None else None
        if not tag or value is None:
            what = "empty locus_tag" if not tag else f"bad essentiality value {raw!r}"
            raise InputError(f"{path}, line {reader.line_num}: {what} (expected essential, "
                             "quasiessential or nonessential)")
        mapping[tag] = value
    return mapping
