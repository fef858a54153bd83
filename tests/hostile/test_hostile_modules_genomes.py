"""Hostile user modules, genomes and snapshots: refused, the store and the cell untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import RUNNING_ECOLI, RUNNING_SYN3A, SYN3A_GENBANK, WITH_GFP

GENE = "w_het = 100; n_het = 300;\n"
# The two modules of issue 11, point 1: they lifted the caps and faked the growth rate.
ESCAPE_CAPS = GENE + "E1: at (time > 1): ribosome_cap = 1e12, atp_scale = 1;\n"
FAKE_GROWTH = GENE + "lam := 0.5;\n"

HOST = ["a", "r", "s_i", "s0", "e_t", "e_m", "q", "lam", "elong", "translating",
        "ribosomes_total", "atp_percent", "M", "k_b", "k_u", "d_m", "theta_nr", "theta_r",
        "gamma_max", "K_gamma", "atp_scale", "ribosome_cap", "n_r", "w_r", "m_r", "c_r",
        "guest_complexes", "ribosome_assembly_room", "v_t", "K_p"]
MODULES: list[tuple[str, str]] = (
    [("escape_caps.ant", ESCAPE_CAPS), ("fake_growth.ant", FAKE_GROWTH)]
    + [(f"value_{s}.ant", GENE + f"{s} = 1;\n") for s in HOST]
    + [(f"rule_{s}.ant", GENE + f"{s} := 1;\n") for s in HOST]
    + [(f"event_{s}.ant", GENE + f"E9: at (time > 0): {s} = 1;\n") for s in HOST[:15]]
    + [(f"reaction_{s}.ant", GENE + f"J9: -> {s}; 1\n") for s in HOST[:10]]
    + [
        ("rate_rule.ant", GENE + "atp_scale' = 1;\n"),
        ("initial.ant", GENE + "k9 = 1; r := k9;\n"),
        ("species.ant", GENE + "species s0;\n"),
        ("boundary.ant", GENE + "J9: $s0 -> p_het; 1\n"),
        ("reaction_id.ant", GENE + "tx_r: -> p_het; 1\n"),
        ("generated.ant", GENE + "copies_het = 1000;\n"),
        ("generated_on.ant", GENE + "on_het = 5;\n"),
        ("generated_m.ant", GENE + "J9: -> m_het; 1e6\n"),
        ("protein_rule.ant", GENE + "p_het := 1e9;\n"),
        ("compartment.ant", GENE + "compartment cell = 5;\n"),
        ("compartment2.ant", GENE + "compartment big = 100; species z in big;\n"),
        ("blank.ant", "w_het = ;\n"), ("blank_n.ant", "w_het = 100; n_het = ;\n"),
        ("no_n.ant", "w_het = 100;\n"), ("empty.ant", ""), ("comment.ant", "// nothing\n"),
        ("nogenes.ant", "k = 1;\n"), ("reserved.ant", "w_q = 1; n_q = 3;\n"),
        ("bad_id.ant", "w__x = 1; n__x = 3;\n"), ("neg_w.ant", "w_het = -5; n_het = 300;\n"),
        ("zero_n.ant", "w_het = 100; n_het = 0;\n"), ("huge_w.ant", "w_het = 1e30; n_het = 3;\n"),
        ("import.ant", 'import "other.ant"\n' + GENE), ("end.ant", GENE + "end\n"),
        ("mid_end.ant", "w_het = 100; n_het = 300; end model evil\n"),
        ("two_models.ant", "model a\n" + GENE + "end\nmodel b\nend\n"),
        ("function.ant", GENE + "function f(x)\n x\nend\n"),
        ("syntax.ant", GENE + "J9: -> ; ;;; ((\n"), ("algebraic.ant", GENE + "0 = het_x - 1;\n"),
        ("delete.ant", GENE + "delete r;\n"), ("many.ant", GENE + "".join(
            f"k{i} = {i};\n" for i in range(600))),
        ("binary.ant", "\udcff"),
        ("not_sbml.xml", "this is not xml"), ("empty_sbml.xml", "<sbml/>"),
        ("html.xml", "<html><body>x</body></html>"), ("xxe.xml", (
            '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            '<sbml xmlns="http://www.sbml.org/sbml/level3/version1/core" level="3" '
            'version="1"><model id="m">&e;</model></sbml>')),
        ("readme.txt", "hello world"),
    ]
)


def _sbml(body: str) -> str:
    import antimony

    assert antimony.loadAntimonyString(f"model sbml_mod\n{body}\nend\n") >= 0
    return antimony.getSBMLString("sbml_mod")


SBML_MODULES = [
    ("sbml_escape.xml", ESCAPE_CAPS), ("sbml_lam.xml", FAKE_GROWTH),
    ("sbml_comp.xml", "compartment cell = 2; species p_het in cell;\n" + GENE),
    ("sbml_r.xml", GENE + "r = 1e6;\n"), ("sbml_nogene.xml", "k = 1;\n"),
]


def _write_module(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    if name == "binary.ant":
        path.write_bytes(b"\xff\xfe\x00w_het = 1")
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("name", "text"), MODULES, ids=[n for n, _ in MODULES])
def test_bad_module_is_refused_and_changes_nothing(name, text, tmp_path, refused_cli,
                                                   refused_api):
    from bioxen_flows.vm import load_bio_vm

    path = _write_module(tmp_path, name, text)
    refused_cli("install", RUNNING_SYN3A, str(path))
    refused_cli("execute", RUNNING_SYN3A, f"install({str(path)!r})")
    vm = load_bio_vm(RUNNING_SYN3A)
    before = vm.get_biological_metrics()
    refused_api(lambda: vm.install_biological_package(str(path)))
    assert vm.get_biological_metrics() == before


@pytest.mark.parametrize(("name", "body"), SBML_MODULES, ids=[n for n, _ in SBML_MODULES])
def test_bad_sbml_module_is_refused(name, body, tmp_path, refused_cli, refused_api):
    from bioxen_flows.vm import load_bio_vm

    path = tmp_path / name
    path.write_text(_sbml(body))
    refused_cli("install", RUNNING_ECOLI, str(path))
    refused_api(lambda: load_bio_vm(RUNNING_ECOLI).install_biological_package(str(path)))


@pytest.mark.parametrize("text", [
    "w_gfp = 1; n_gfp = 10;\n", GENE + "J9: -> p_gfp; 1e6\n", GENE + "on_gfp = 0;\n",
    GENE + "copies_gfp = 500;\n", GENE + "w_gfp2 = 1; n_gfp2 = 3; dil_p_gfp: p_het -> ; 1\n",
])
def test_module_may_not_touch_another_package(text, tmp_path, refused_cli, refused_api):
    from bioxen_flows.vm import load_bio_vm

    path = _write_module(tmp_path, "other.ant", text)
    refused_cli("install", WITH_GFP, str(path))
    refused_api(lambda: load_bio_vm(WITH_GFP).install_biological_package(str(path)))


@pytest.mark.parametrize("name", ["fifo.ant", "dir.ant", "dir.xml", "zero.ant", "zero.xml",
                                  "urandom.ant", "loop.ant", "huge.ant", "huge.xml"])
def test_module_files_that_are_not_small_regular_files_are_refused(
    name, hostile_files, refused_cli, refused_api
):
    from bioxen_flows.vm import load_bio_vm

    path = hostile_files / name
    refused_cli("install", RUNNING_SYN3A, str(path))
    refused_api(lambda: load_bio_vm(RUNNING_SYN3A).install_biological_package(str(path)))


def test_the_two_escaping_modules_leave_the_vm_unchanged(tmp_path, store_dump):
    """Issue 11, point 1: under a ribosome cap, neither module may lift it or fake growth."""
    from bioxen_flows.errors import InputError
    from bioxen_flows.vm import create_bio_vm

    vm = create_bio_vm("capped", "ecoli", config={"resources": {"ribosomes": 1000}})
    try:
        vm.start()
        vm.execute_biological_process("grow(minutes=600)")
        before, dump = vm.get_biological_metrics(), store_dump()
        assert before["ribosomes_total"] <= 1000.5
        for name, text in (("escape.ant", ESCAPE_CAPS), ("fake.ant", FAKE_GROWTH)):
            path = _write_module(tmp_path, name, text)
            with pytest.raises(InputError, match="host symbol"):
                vm.install_biological_package(str(path))
            with pytest.raises(InputError, match="host symbol"):
                vm.execute_biological_process(f"install({str(path)!r})\ngrow(minutes=600)")
            assert vm.get_biological_metrics() == before
            assert store_dump() == dump
        vm.execute_biological_process("grow(minutes=600)")  # the cap still holds
        after = vm.get_biological_metrics()
        assert after["ribosomes_total"] <= 1000.5
        assert after["growth_rate_per_min"] < 0.1
    finally:
        vm.destroy()


def test_an_sbml_module_with_its_own_compartment_cell_is_accepted(tmp_path):
    from bioxen_flows.engine.cell import Cell

    path = tmp_path / "own_cell.xml"
    path.write_text(_sbml("compartment cell = 1; species p_het in cell;\n" + GENE
                          + "k_deg = 0.01; J9: p_het -> ; k_deg*p_het\n"))
    cell = Cell("ecoli")
    cell.install(str(path))
    cell.grow(600)
    assert cell.metrics()["protein_molecules"]["het"] > 100


# ---- genomes ---------------------------------------------------------------------------------
def _genbank_variant(replace_location: str) -> str:
    text = SYN3A_GENBANK.read_text()
    start = text.index("     CDS             ")
    end = text.index("\n", start)
    return text[:start] + "     CDS             " + replace_location + text[end:]


GENOMES = [
    ("empty.gb", ""), ("text.gb", "hello\n"), ("locus_only.gb", "LOCUS       X\n//\n"),
    ("truncated.gb", "\n".join(SYN3A_GENBANK.read_text().splitlines()[:80])),
    ("fasta.gb", ">seq\nACGT\n"), ("binary.gb", "\x00\x01\x02"),
]
LOCATIONS = ["join(complement(5..>1),abc)", "abc", "5..", "..5", "complement(", "join()",
             "0..-5", "1..99999999999999999999"]


@pytest.mark.parametrize(("name", "text"), GENOMES, ids=[n for n, _ in GENOMES])
def test_bad_genbank_is_refused(name, text, tmp_path, refused_cli, refused_api):
    from bioxen_flows.organisms.genome import load_genbank

    path = tmp_path / name
    path.write_text(text)
    refused_cli("genome", "import", str(path))
    refused_api(lambda: load_genbank(path))


@pytest.mark.parametrize("location", LOCATIONS)
def test_bad_genbank_location_is_refused(location, tmp_path, refused_cli, refused_api):
    from bioxen_flows.organisms.genome import load_genbank

    path = tmp_path / "bad_location.gb"
    path.write_text(_genbank_variant(location))
    refused_cli("genome", "import", str(path), "--vm", RUNNING_SYN3A)
    refused_api(lambda: load_genbank(path))


@pytest.mark.parametrize("name", ["fifo.gb", "dir.gb", "zero.gb", "loop.gb", "huge.gb",
                                  "missing.gb"])
def test_genome_files_that_are_not_small_regular_files_are_refused(
    name, hostile_files, refused_cli, refused_api
):
    from bioxen_flows.organisms.genome import load_genbank

    refused_cli("genome", "import", str(hostile_files / name))
    refused_api(lambda: load_genbank(hostile_files / name))


ESSENTIALITY = [("nohdr.csv", "a,b\n1,2\n"), ("badval.csv", "locus_tag,essentiality\nx,maybe\n"),
                ("unknown.csv", "locus_tag,essentiality\nNOPE_0001,essential\n"),
                ("empty.csv", ""), ("emptytag.csv", "locus_tag,essentiality\n,essential\n")]


@pytest.mark.parametrize(("name", "text"), ESSENTIALITY, ids=[n for n, _ in ESSENTIALITY])
def test_bad_essentiality_table_is_refused(name, text, tmp_path, refused_cli):
    path = tmp_path / name
    path.write_text(text)
    refused_cli("genome", "import", str(SYN3A_GENBANK), "--essentiality", str(path),
                "--vm", RUNNING_SYN3A)


@pytest.mark.parametrize("name", ["fifo.csv", "zero.csv"])
def test_essentiality_files_that_are_not_regular_are_refused(name, hostile_files, refused_api):
    from bioxen_flows.organisms.genome import load_essentiality_csv

    refused_api(lambda: load_essentiality_csv(hostile_files / name))


def test_genome_import_for_an_unknown_vm_is_refused(refused_cli):
    refused_cli("genome", "import", str(SYN3A_GENBANK), "--vm", "nope")


# ---- snapshots -------------------------------------------------------------------------------
def _good(vm_id: str = RUNNING_SYN3A) -> dict:
    from bioxen_flows.resources import BioResourceManager
    from bioxen_flows.vm import load_bio_vm

    return BioResourceManager(load_bio_vm(vm_id)).create_resource_snapshot()


def _cell(**changes) -> dict:
    snap = _good()
    snap["cell"] = {**snap["cell"], **changes}
    return snap


SNAPSHOTS = {
    "none": lambda: None, "int": lambda: 1, "str": lambda: "x", "list": lambda: [],
    "empty": lambda: {}, "id_only": lambda: {"vm_id": RUNNING_SYN3A},
    "cell_none": lambda: {"vm_id": RUNNING_SYN3A, "cell": None},
    "cell_empty": lambda: {"vm_id": RUNNING_SYN3A, "cell": {}},
    "other_vm": lambda: {**_good(), "vm_id": "eco"},
    "other_organism": lambda: _good(RUNNING_ECOLI) | {"vm_id": RUNNING_SYN3A},
    "organism_unknown": lambda: _cell(biological_type="human"),
    "organism_int": lambda: _cell(biological_type=3),
    "time_negative": lambda: _cell(time=-1), "time_nan": lambda: _cell(time=float("nan")),
    "time_str": lambda: _cell(time="0"), "time_huge": lambda: _cell(time=1e300),
    "settings_lam": lambda: _cell(settings={"lam": 0.5}),
    "settings_nan": lambda: _cell(settings={"s0": float("nan")}),
    "settings_list": lambda: _cell(settings=[]),
    "species_negative": lambda: _cell(species={"r": -5.0}),
    "species_unknown": lambda: _cell(species={"zz": 1.0}),
    "species_huge": lambda: _cell(species={"r": 1e20}),
    "species_str": lambda: _cell(species={"r": "5"}),
    "packages_str": lambda: _cell(packages="gfp"),
    "packages_unknown": lambda: _cell(packages=[{"name": "nope", "copies": 1}]),
    "packages_device": lambda: _cell(packages=[{"name": "/dev/zero.ant", "copies": 1}]),
    "packages_copies0": lambda: _cell(packages=[{"name": "gfp_reporter", "copies": 0}]),
    "packages_extra": lambda: _cell(packages=[{"name": "gfp_reporter", "copies": 1, "x": 1}]),
    "stochastic_str": lambda: _cell(stochastic="no"),
    "stochastic_flip": lambda: _cell(stochastic=True, seed=1),
    "seed_negative": lambda: _cell(seed=-1), "seed_huge": lambda: _cell(seed=2**64),
    "alloc_over": lambda: {**_good(), "allocations": {"atp_percent": 5000}},
    "alloc_unknown": lambda: {**_good(), "allocations": {"foo": 1}},
    "alloc_list": lambda: {**_good(), "allocations": []},
    "alloc_str": lambda: {**_good(), "allocations": {"ribosomes": "10"}},
    "missing_species": lambda: {**_good(), "cell": {
        k: v for k, v in _good()["cell"].items() if k != "species"}},
}


@pytest.mark.parametrize("name", list(SNAPSHOTS))
def test_garbage_snapshot_is_refused(name, refused_api):
    from bioxen_flows.resources import BioResourceManager
    from bioxen_flows.vm import load_bio_vm

    snap = SNAPSHOTS[name]()
    vm = load_bio_vm(RUNNING_SYN3A)
    before = vm.get_biological_metrics()
    refused_api(lambda: BioResourceManager(vm).restore_from_snapshot(snap))
    if not name.startswith("alloc"):
        assert vm.get_biological_metrics() == before
