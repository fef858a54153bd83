from pathlib import Path

import pytest

from bioxen_flows.errors import InputError, NotFoundError
from bioxen_flows.organisms.genome import (
    EssentialityUnavailableError,
    Genome,
    load_essentiality_csv,
    load_genbank,
)

SYN3A_GB = Path(__file__).resolve().parents[2] / "shared" / "data" / "syn3A.gb"

needs_syn3a = pytest.mark.skipif(
    not SYN3A_GB.is_file(), reason=f"JCVI-Syn3A GenBank file (CP016816.2) not found at {SYN3A_GB}"
)


@pytest.fixture(scope="module")
def syn3a() -> Genome:
    if not SYN3A_GB.is_file():
        pytest.skip(f"JCVI-Syn3A GenBank file (CP016816.2) not found at {SYN3A_GB}")
    return load_genbank(SYN3A_GB)


def _write_csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "essentiality.csv"
    path.write_text(text)
    return path


@needs_syn3a
def test_syn3a_counts(syn3a: Genome) -> None:
    assert syn3a.accession == "CP016816.2"
    assert syn3a.length_bp == 543_379
    assert len(syn3a.protein_coding_genes) == 455
    rna_kinds = [g.kind for g in syn3a.rna_genes]
    assert len(rna_kinds) == 38
    assert {k: rna_kinds.count(k) for k in set(rna_kinds)} == {
        "tRNA": 29, "rRNA": 6, "ncRNA": 2, "tmRNA": 1,
    }
    assert syn3a.summary() == {
        "accession": "CP016816.2",
        "length_bp": 543_379,
        "protein_coding": 455,
        "rna": 38,
        "pseudogenes": 3,
        "total_genes": 496,
    }


@needs_syn3a
def test_pseudogenes_are_not_protein_coding(syn3a: Genome) -> None:
    pseudo = [g.locus_tag for g in syn3a.genes if g.kind == "pseudogene"]
    assert pseudo == ["JCVISYN3A_0051", "JCVISYN3A_0546", "JCVISYN3A_0602"]
    assert syn3a.gene("JCVISYN3A_0051").length_aa is None


@needs_syn3a
def test_known_gene_dnaa(syn3a: Genome) -> None:
    dnaa = syn3a.gene("JCVISYN3A_0001")
    assert dnaa.name == "dnaA"
    assert dnaa.product == "Chromosomal replication initiator protein"
    assert dnaa.kind == "protein_coding"
    assert (dnaa.start, dnaa.end, dnaa.strand) == (0, 1353, 1)
    assert dnaa.length_bp == 1353
    assert dnaa.length_aa == 450  # length of the record's /translation


@needs_syn3a
def test_gene_lookup_by_name(syn3a: Genome) -> None:
    assert syn3a.gene("dnaA").locus_tag == "JCVISYN3A_0001"
    assert syn3a.gene("ssrA").kind == "tmRNA"
    with pytest.raises(NotFoundError, match="no_such_gene"):
        syn3a.gene("no_such_gene")
    with pytest.raises(InputError, match="ambiguous"):
        syn3a.gene("tRNA-Leu")  # several tRNA-Leu genes share the name


@needs_syn3a
def test_records_are_pandas_friendly(syn3a: Genome) -> None:
    records = syn3a.to_records()
    assert len(records) == 496
    assert records[0]["locus_tag"] == "JCVISYN3A_0001"
    assert "essentiality" not in records[0]


@needs_syn3a
def test_essential_genes_without_data_raises(syn3a: Genome) -> None:
    with pytest.raises(EssentialityUnavailableError, match="essentiality CSV|load_essentiality"):
        syn3a.essential_genes()
    assert issubclass(EssentialityUnavailableError, ValueError)


@needs_syn3a
def test_essential_genes_from_csv(syn3a: Genome, tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path,
        "locus_tag,essentiality\n"
        "JCVISYN3A_0001,Essential\n"
        "JCVISYN3A_0002,quasi-essential\n"
        "JCVISYN3A_0004,NON\n"
        "JCVISYN3A_0005, essential \n",
    )
    mapping = load_essentiality_csv(path)
    assert mapping == {
        "JCVISYN3A_0001": "essential",
        "JCVISYN3A_0002": "quasiessential",
        "JCVISYN3A_0004": "nonessential",
        "JCVISYN3A_0005": "essential",
    }
    annotated = syn3a.with_essentiality(mapping)
    assert syn3a.essentiality is None  # original untouched
    assert [g.locus_tag for g in annotated.essential_genes()] == [
        "JCVISYN3A_0001", "JCVISYN3A_0005",
    ]
    assert [g.locus_tag for g in annotated.essential_genes(include_quasi=True)] == [
        "JCVISYN3A_0001", "JCVISYN3A_0002", "JCVISYN3A_0005",
    ]
    assert annotated.to_records()[1]["essentiality"] == "quasiessential"


def test_bad_essentiality_value_reports_line(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path, "locus_tag,essentiality\nJCVISYN3A_0001,essential\nJCVISYN3A_0002,maybe\n"
    )
    with pytest.raises(ValueError, match=r"line 3.*'maybe'") as excinfo:
        load_essentiality_csv(path)
    assert str(path) in str(excinfo.value)


def test_essentiality_csv_missing_columns(tmp_path: Path) -> None:
    path = _write_csv(tmp_path, "gene,status\nJCVISYN3A_0001,essential\n")
    with pytest.raises(ValueError, match="locus_tag"):
        load_essentiality_csv(path)


@needs_syn3a
def test_unknown_locus_tag_errors(syn3a: Genome) -> None:
    with pytest.raises(ValueError, match="JCVISYN3A_9999"):
        syn3a.with_essentiality({"JCVISYN3A_0001": "essential", "JCVISYN3A_9999": "essential"})
    many = {f"BOGUS_{i}": "essential" for i in range(7)}
    with pytest.raises(ValueError, match=r"7 locus tag\(s\)") as excinfo:
        syn3a.with_essentiality(many)
    assert str(excinfo.value).count("BOGUS_") == 5  # lists at most 5


def test_non_genbank_file_errors(tmp_path: Path) -> None:
    fasta = tmp_path / "genome.fasta"
    fasta.write_text(">seq1\nACGTACGT\n")
    with pytest.raises(ValueError, match="genome.fasta"):
        load_genbank(fasta)


def test_missing_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gb"
    with pytest.raises(ValueError, match="nope.gb"):
        load_genbank(missing)
