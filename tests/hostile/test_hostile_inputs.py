"""Hostile ids, allocations and configs: refused by the CLI and the API, the store untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import CREATED, PAUSED, RUNNING_SYN3A

# ---- ids -----------------------------------------------------------------------------------
BAD_IDS = ["", "a" * 65, "a b", "a/b", "../x", "x;rm -rf", "é", "a\nb", "a:b", "a*", "a$",
           "a\tb", "a|b", "'a'", "a\\b", "<a>", "a,b", "a%b", "a@b", "a(b)"]
UNKNOWN_IDS = ["nope", "SYN", "syn_", "syn.", "a" * 64]
COMMANDS = ["start", "stop", "pause", "resume", "destroy", "status", "resources"]


@pytest.mark.parametrize("vm_id", BAD_IDS)
def test_create_with_a_bad_id_is_refused(vm_id, refused_cli, refused_api):
    from bioxen_flows.vm import create_bio_vm

    refused_cli("create", vm_id, "syn3a")
    refused_api(lambda: create_bio_vm(vm_id, "syn3a"))


@pytest.mark.parametrize("command", COMMANDS + ["execute", "install", "allocate", "monitor",
                                                "optimize"])
@pytest.mark.parametrize("vm_id", UNKNOWN_IDS)
def test_commands_on_an_unknown_vm_are_refused(command, vm_id, refused_cli, refused_api):
    from bioxen_flows.vm import load_bio_vm

    extra = {"execute": ["grow(1)"], "install": ["gfp_reporter"], "allocate": ["--atp", "50"],
             "monitor": ["--count", "1"]}.get(command, [])
    refused_cli(command, vm_id, *extra)
    refused_api(lambda: load_bio_vm(vm_id))


@pytest.mark.parametrize(("argv", "api"), [
    (("create", RUNNING_SYN3A, "syn3a"), "duplicate"),
    (("create", "newvm", "human"), "organism"),
    (("create", "newvm", "SYN3A"), "organism"),
    (("create", "newvm", ""), "organism"),
    (("start", RUNNING_SYN3A), "start"),
    (("resume", RUNNING_SYN3A), "resume"),
    (("pause", CREATED), "pause"),
    (("resume", CREATED), "resume"),
    (("stop", CREATED), "stop"),
    (("start", PAUSED), "start"),
    (("pause", PAUSED), "pause"),
    (("execute", PAUSED, "grow(1)"), "execute"),
    (("execute", CREATED, "grow(1)"), "execute"),
    (("execute", RUNNING_SYN3A, "--file", "/nonexistent/prog.txt"), None),
])
def test_illegal_operations_are_refused(argv, api, refused_cli, refused_api):
    from bioxen_flows.vm import create_bio_vm, load_bio_vm

    refused_cli(*argv)
    calls = {
        "duplicate": lambda: create_bio_vm(RUNNING_SYN3A, "syn3a"),
        "organism": lambda: create_bio_vm("newvm", argv[2]),
        "start": lambda: load_bio_vm(argv[1]).start(),
        "resume": lambda: load_bio_vm(argv[1]).resume(),
        "pause": lambda: load_bio_vm(argv[1]).pause(),
        "stop": lambda: load_bio_vm(argv[1]).stop(),
        "execute": lambda: load_bio_vm(argv[1]).execute_biological_process("grow(1)"),
    }
    if api is not None:
        refused_api(calls[api])


@pytest.mark.parametrize("organism_call", [
    ("syn", "manage_operons", (["lac"], "induce")), ("syn", "get_plasmid_count", ()),
    ("eco", "start_transcription", (["lacZ"],)), ("eco", "get_essential_genes", ()),
    ("syn", "start_transcription", (5,)), ("syn", "start_transcription", ([1, 2],)),
    ("syn", "start_transcription", (None,)), ("syn", "start_transcription", ({"a": 1},)),
    ("syn", "get_essential_genes", ()), ("syn", "start_transcription", (["nope"],)),
])
def test_organism_specific_calls_refuse_bad_use(organism_call, refused_api):
    from bioxen_flows.vm import load_bio_vm

    vm_id, method, args = organism_call
    vm = load_bio_vm(vm_id)
    refused_api(lambda: getattr(vm, method)(*args))


# ---- allocations ---------------------------------------------------------------------------
BAD_ATP = ["0", "-1", "101", "nan", "inf", "-inf", "1e309", "100.0001", "-0"]
BAD_RIBOSOMES = ["0", "-5", "100001", str(10**30), "-" + "9" * 50]


@pytest.mark.parametrize("value", BAD_ATP)
def test_bad_atp_allocation_is_refused(value, refused_cli, refused_api):
    from bioxen_flows.vm import load_bio_vm

    refused_cli("allocate", RUNNING_SYN3A, f"--atp={value}")
    refused_api(lambda: load_bio_vm(RUNNING_SYN3A).allocate(atp_percent=float(value)))


@pytest.mark.parametrize("value", BAD_RIBOSOMES)
def test_bad_ribosome_allocation_is_refused(value, refused_cli, refused_api):
    from bioxen_flows.vm import load_bio_vm

    refused_cli("allocate", RUNNING_SYN3A, f"--ribosomes={value}")
    refused_api(lambda: load_bio_vm(RUNNING_SYN3A).allocate(ribosomes=int(value)))


@pytest.mark.parametrize("kwargs", [
    {"atp_percent": "50"}, {"atp_percent": [50]}, {"atp_percent": True}, {"ribosomes": 1.5},
    {"ribosomes": "10"}, {"ribosomes": True}, {"ribosomes": 10**30}, {"atp_percent": {}},
    {"atp_percent": 50, "ribosomes": 0}, {"atp_percent": 0, "ribosomes": 500},
])
def test_bad_allocation_types_are_refused_by_the_api(kwargs, refused_api):
    from bioxen_flows.vm import load_bio_vm

    refused_api(lambda: load_bio_vm(RUNNING_SYN3A).allocate(**kwargs))


@pytest.mark.parametrize("argv", [
    ("optimize", RUNNING_SYN3A, "--keep-growth", "0"),
    ("optimize", RUNNING_SYN3A, "--keep-growth", "-1"),
    ("optimize", RUNNING_SYN3A, "--keep-growth", "1.5"),
    ("optimize", RUNNING_SYN3A, "--keep-growth", "nan"),
    ("optimize", RUNNING_SYN3A, "--keep-growth", "inf"),
    ("monitor", RUNNING_SYN3A, "--interval", "0"),
    ("monitor", RUNNING_SYN3A, "--interval", "-1"),
    ("monitor", RUNNING_SYN3A, "--interval", "inf"),
    ("monitor", RUNNING_SYN3A, "--interval", "nan"),
    ("monitor", RUNNING_SYN3A, "--interval", "1e9"),
    ("monitor", RUNNING_SYN3A, "--count", "0"),
    ("monitor", RUNNING_SYN3A, "--count", "-3"),
    ("performance", "--minutes", "0"),
    ("performance", "--minutes", "nan"),
    ("performance", "--minutes", "1e9"),
    ("compare", "human"),
])
def test_bad_tool_options_are_refused(argv, refused_cli):
    refused_cli(*argv)


@pytest.mark.parametrize("keep", [0, -1, 1.5, float("nan"), float("inf"), "0.9", None])
def test_bad_keep_growth_is_refused_by_the_api(keep, refused_api):
    from bioxen_flows.resources import BioResourceManager
    from bioxen_flows.vm import load_bio_vm

    manager = BioResourceManager(load_bio_vm(RUNNING_SYN3A))
    refused_api(lambda: manager.auto_optimize_resources(keep_growth=keep))


# ---- configs ---------------------------------------------------------------------------------
# (file name, text): each a config `create` must refuse
CONFIG_TEXTS: list[tuple[str, str]] = [
    ("s1.yaml", "a: ["), ("s2.yaml", "a: b: c"), ("s3.yaml", "\t- x"), ("s4.yaml", "key: 'x"),
    ("s5.yaml", "{"), ("s6.yaml", "[1, 2"), ("s7.yaml", "a: *alias"),
    ("s8.yaml", "resources: &r {atp_percent: 50}\nsimulation: *r"),
    ("s9.yaml", "!!python/object/apply:os.system ['id']"),
    ("s10.yaml", "resources: !!python/name:os.system"), ("s11.yaml", "[" * 5000),
    ("s12.yaml", "a:\n" + "  " * 3 + "- " * 3000 + "x"),
    ("n1.yaml", "[]"), ("n2.yaml", "1"), ("n3.yaml", "'str'"), ("n4.yaml", ""),
    ("n5.yaml", "- a\n- b"), ("n6.yaml", "true"), ("n7.yaml", "null"), ("n8.json", "[]"),
    ("n9.json", "42"), ("n10.json", '"x"'), ("n11.json", "null"),
    ("j1.json", "{"), ("j2.json", "["), ("j3.json", '{"a": }'), ("j4.json", "nul"),
    ("j5.json", "[" * 100_000), ("j6.json", '{"resources": {"atp_percent": NaN}}'),
    ("j7.json", '{"resources": {"atp_percent": Infinity}}'), ("j8.json", "\ufeff{,}"),
    ("f1.txt", "resources: {}"), ("f2", "resources: {}"), ("f3.toml", "x = 1"),
    ("f4.YAML.bak", "{}"),
]
CONFIG_DATA: list[dict] = [
    {"unknown": 1}, {"resources": {"atp_percent": 0}}, {"resources": {"atp_percent": -1}},
    {"resources": {"atp_percent": 101}}, {"resources": {"atp_percent": "50"}},
    {"resources": {"atp_percent": True}}, {"resources": {"ribosomes": 0}},
    {"resources": {"ribosomes": -1}}, {"resources": {"ribosomes": 1.5}},
    {"resources": {"ribosomes": "10"}}, {"resources": {"ribosomes": 10**7}},
    {"resources": {"cpu": 1}}, {"resources": []}, {"simulation": {"stochastic": "yes"}},
    {"simulation": {"stochastic": 1}}, {"simulation": {"stochastic": True}},
    {"simulation": {"stochastic": True, "seed": -1}},
    {"simulation": {"stochastic": True, "seed": 2**64}},
    {"simulation": {"stochastic": True, "seed": 2**63}},
    {"simulation": {"stochastic": True, "seed": 10**400}},
    {"simulation": {"seed": "7"}}, {"simulation": {"seed": 1.5}},
    {"simulation": {"nutrient": -1}}, {"simulation": {"nutrient": 1e10}},
    {"simulation": {"nutrient": "lots"}}, {"simulation": {"nutrient": None, "x": 1}},
    {"packages": "gfp_reporter"}, {"packages": [1]}, {"packages": [""]},
    {"packages": ["gfp_reporter"] * 21}, {"packages": ["nope"]},
    {"packages": ["gfp_reporter", "gfp_reporter"]}, {"packages": ["/dev/zero.ant"]},
    {"packages": [{"name": "gfp_reporter"}]}, {"labels": ["a"]}, {"labels": {"a": 1}},
    {"labels": {"": "x"}}, {"labels": {f"k{i}": "v" for i in range(51)}},
    {"placement": {"vm_uuid": "template-uuid"}}, {"placement": None},
    {"placement": {"ip": "10.0.0.1"}}, {"biological_type": "ecoli"},
    {"biological_type": "human"}, {"biological_type": 3}, {"vm_type": "kvm"},
    {"vm_type": "xcpng"}, {"vm_type": ["basic"]},
    {"vm_type": "xcpng", "xcpng_config": {"url": "ftp://x", "username": "root",
                                          "template": "t", "ssh_user": "u",
                                          "ssh_key_path": "k", "known_hosts_path": "h"}},
    {"xcpng_config": {"password": "hunter2"}}, {"xcpng_config": []},
    {"genome": {}}, {"genome": {"genbank_file": ""}}, {"genome": {"genbank_file": 1}},
    {"resources": {"atp_percent": 50}, "extra": {"deep": [1, 2, {"x": None}]}},
]


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("name", "text"), CONFIG_TEXTS, ids=[n for n, _ in CONFIG_TEXTS])
def test_unparsable_config_files_are_refused(name, text, tmp_path, refused_cli, refused_api):
    from bioxen_flows.config import ConfigManager

    path = _write(tmp_path, name, text)
    refused_cli("create", "cfgvm", "syn3a", "--config", str(path))
    refused_cli("config", "validate", str(path), "--bio-type", "syn3a")
    refused_api(lambda: ConfigManager().load_from_file(path))


@pytest.mark.parametrize("data", CONFIG_DATA, ids=[f"data{i}" for i in range(len(CONFIG_DATA))])
@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_invalid_configs_are_refused(data, fmt, tmp_path, refused_cli, refused_api):
    from bioxen_flows.vm import create_bio_vm

    text = yaml.safe_dump(data) if fmt == "yaml" else json.dumps(data)
    path = _write(tmp_path, f"bad.{fmt}", text)
    refused_cli("create", "cfgvm", "syn3a", "--config", str(path))
    if fmt == "yaml":
        refused_api(lambda: create_bio_vm("cfgvm", "syn3a", config=data))


@pytest.mark.parametrize("name", ["fifo.yaml", "fifo.json", "dir.yaml", "dir.json", "zero.yaml",
                                  "zero.json", "urandom.yaml", "loop.yaml", "huge.yaml",
                                  "huge.json", "missing.yaml"])
def test_config_files_that_are_not_small_regular_files_are_refused(
    name, hostile_files, refused_cli, refused_api
):
    from bioxen_flows.config import ConfigManager

    path = hostile_files / name
    refused_cli("create", "cfgvm", "syn3a", "--config", str(path))
    refused_cli("config", "validate", str(path))
    refused_cli("compare", "--config", str(path))
    refused_api(lambda: ConfigManager().load_from_file(path))


@pytest.mark.parametrize("config", [[], "x", 1, [("resources", {})], None.__class__])
def test_a_config_that_is_not_a_mapping_is_refused_by_the_api(config, refused_api):
    from bioxen_flows.config import ConfigManager
    from bioxen_flows.vm import create_bio_vm

    refused_api(lambda: create_bio_vm("cfgvm", "syn3a", config=config))
    refused_api(lambda: ConfigManager().merge_configs({}, config))


def test_yaml_exponent_floats_are_numbers(tmp_path):
    from bioxen_flows.config import ConfigManager

    path = _write(tmp_path, "n.yaml", "simulation:\n  nutrient: 1e9\n")
    assert ConfigManager().load_from_file(path)["simulation"]["nutrient"] == 1e9


@pytest.mark.parametrize("argv", [
    ("budget", "--ribosomes", "-1"),
    ("budget", "--ribosomes", "0"),
    ("budget", "--ribosomes", str(10**13)),
    ("budget", "--atp", "0"),
    ("budget", "--atp", "-5"),
    ("budget", "--atp", "nan"),
    ("budget", "--atp", "inf"),
    ("budget", "--atp", "1e12"),
    ("destroy", "--force", "no-such-vm"),
    ("destroy", "--force", "bad id\n"),
])
def test_store_commands_refuse_bad_values(refused_cli, argv):
    refused_cli(*argv)


@pytest.mark.parametrize("url", [
    "not a url://", "::::", "mysql://u@h/db", "postgresql://nobody@127.0.0.1:1/none",
    "postgresql://u:s3cret-pw@127.0.0.1:1/none",
])
def test_bad_database_urls_are_one_line_without_secrets(refused_cli, monkeypatch, url):
    monkeypatch.setenv("BIOXEN_DATABASE_URL", url)
    line = refused_cli("list")
    assert "s3cret-pw" not in line
