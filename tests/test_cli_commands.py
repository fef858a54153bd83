"""The `bioxen` VM commands through the real entry point, one process per command.

Each test's BIOXEN_HOME (tests/conftest.py) is its own state store, so what one process
creates the next one must find there. Bad input must exit 1 with one line on stderr and
change nothing; usage mistakes exit 2.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from typing import Any

import pytest

from tests.helpers import SYN3A_GENBANK, bioxen, data, ok, refused

HEAVY = ("prefect", "roadrunner", "pandas", "numpy")  # pydantic: settings need it


def stored(env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """What the store holds, minus the wall clock (uptime grows while a VM runs)."""
    return [{k: v for k, v in vm.items() if k != "uptime_seconds"}
            for vm in data("list", env=env)]


# ---- lifecycle across processes ------------------------------------------------------------
def test_create_then_list_start_execute_status_destroy_in_later_processes():
    created = data("create", "lab", "syn3a")
    assert (created["vm_id"], created["state"], created["vm_type"]) == ("lab", "created", "basic")
    assert [(v["vm_id"], v["state"]) for v in data("list")] == [("lab", "created")]
    assert "lab" in ok("list").stdout and "created" in ok("list").stdout

    assert ok("start", "lab").stdout.strip() == "VM lab: running"
    result = data("execute", "lab", 'install("gfp_reporter")', "grow(minutes=60)")
    assert result["calls"] == ['install("gfp_reporter")', "grow(minutes=60)"]
    assert result["summary"]["simulated_time_min"] == pytest.approx(60)
    assert result["summary"]["protein_molecules"]["gfp"] > 0
    assert len(result["timeseries"]) == 61

    status = data("status", "lab")
    assert status["state"] == "running"
    assert status["simulated_time_min"] == pytest.approx(60)
    assert status["installed_packages"] == ["gfp_reporter"]
    assert status["metrics"]["doubling_time_min"] == pytest.approx(105, rel=0.1)
    human = ok("status", "lab").stdout
    assert "running" in human and "gfp_reporter" in human and "doubling time" in human

    for action, state in (("pause", "paused"), ("resume", "running"), ("stop", "stopped")):
        assert data(action, "lab") == {"vm_id": "lab", "state": state}
        assert data("list")[0]["state"] == state
    assert data("list")[0]["simulated_time_min"] == pytest.approx(60)  # stopped: clock kept
    assert ok("destroy", "lab").stdout.strip() == "VM lab: destroyed"
    assert data("list") == []
    assert "no VMs" in ok("list").stdout


def test_execute_reads_a_program_from_a_file_or_stdin(tmp_path):
    ok("create", "e", "ecoli", "--auto-start")
    program = tmp_path / "induce.txt"
    program.write_text('# lac induction\ninstall("lac_operon")\n'
                       'manage_operons(["lac"], "induce")\n')
    assert data("execute", "e", "--file", str(program))["summary"]["operon_states"] == {
        "lac": "induced"}
    grown = data("execute", "e", "--file", "-", input="grow(minutes=30)\n")
    assert grown["summary"]["simulated_time_min"] == pytest.approx(30)
    assert grown["summary"]["protein_molecules"]["lacZ"] > 0


def test_install_allocate_resources_optimize_monitor():
    ok("create", "e", "ecoli", "--auto-start")
    assert data("install", "e", "rfp_plasmid") == {
        "package": "rfp_plasmid", "genes": ["rfp"], "operons": [], "copies": 15}
    assert data("allocate", "e", "--atp", "80", "--ribosomes", "3000")["allocations"] == {
        "atp_percent": 80.0, "ribosomes": 3000}
    assert data("list")[0]["allocations"] == {"atp_percent": 80.0, "ribosomes": 3000}

    resources = data("resources", "e")
    assert resources["usage"]["atp_cap_percent"] == pytest.approx(80)
    used = resources["usage"]["ribosome_allocation_used_percent"]
    assert used == pytest.approx(100 * resources["usage"]["ribosomes_total"] / 3000)
    assert {r["kind"] for r in resources["recommendations"]} >= {"ribosomes"}  # over its cap
    assert "recommendations" in ok("resources", "e").stdout

    optimized = data("optimize", "e")
    assert optimized["growth_kept_fraction"] >= 0.95
    assert data("list")[0]["allocations"] == {
        "atp_percent": optimized["atp_percent"], "ribosomes": optimized["ribosomes"]}

    lines = ok("monitor", "e", "--interval", "0.05", "--count", "3", "--json").stdout.splitlines()
    samples = [json.loads(line) for line in lines]
    assert len(samples) == 3
    assert all(s["vm_id"] == "e" and s["atp_cap_percent"] == optimized["atp_percent"]
               for s in samples)
    assert samples[0]["timestamp"] < samples[-1]["timestamp"]
    plain = ok("monitor", "e", "--interval", "0.05", "--count", "2").stdout.splitlines()
    assert plain[0].startswith("time\t") and len(plain) == 3


def test_monitor_stops_on_ctrl_c_with_exit_0():
    ok("create", "m", "syn3a")
    proc = subprocess.Popen([sys.executable, "-m", "bioxen_flows", "monitor", "m",
                             "--interval", "0.1"], stdout=subprocess.PIPE, encoding="utf-8",
                            stderr=subprocess.PIPE, env=os.environ.copy())
    try:
        assert proc.stdout.readline().startswith("time\t")
        assert proc.stdout.readline().count("\t") == 7  # a first sample arrived
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err


# ---- bad input: exit 1, one line, nothing changed ------------------------------------------
BAD_INPUT = {
    "unknown VM": (("start", "ghost"), "no VM 'ghost'; known VMs: lab"),
    "unknown VM, status": (("status", "ghost"), "no VM 'ghost'"),
    "bad organism": (("create", "new", "yeast"), "unknown biological_type 'yeast'"),
    "bad vm id": (("create", "bad id!", "syn3a"), "invalid vm_id"),
    "duplicate": (("create", "lab", "ecoli"), "VM 'lab' already exists"),
    "syntax": (("execute", "lab", "grow(minutes=5)", "grow("), "line 2: not a valid call"),
    "not a call": (("execute", "lab", "grow(minutes=5)", '__import__("os").system("true")'),
                   "line 2: call must be a bare name"),
    "wrong organism": (("execute", "lab", 'manage_operons(["lac"], "induce")'),
                       "'manage_operons' is not available for syn3a"),
    "run-time failure": (("execute", "lab", "grow(minutes=5)", 'start_transcription("gfp")'),
                         "line 2"),
    "lifecycle": (("resume", "lab"), "cannot resume VM 'lab': it is running"),
    "package": (("install", "lab", "nothing"), "unknown package 'nothing'"),
    "budget": (("allocate", "lab", "--ribosomes", "999999999"), "exceeds the host budget"),
    "monitor interval": (("monitor", "lab", "--interval", "0"), "--interval must be > 0"),
    "missing file": (("execute", "lab", "--file", "nope.txt"), "No such file or directory"),
}


@pytest.fixture(scope="module")
def lab_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One running syn3a VM `lab` (60 simulated min, ATP capped) shared by the bad inputs."""
    env = {"BIOXEN_HOME": str(tmp_path_factory.mktemp("lab") / "home")}
    ok("create", "lab", "syn3a", "--auto-start", env=env)
    ok("allocate", "lab", "--atp", "90", env=env)
    ok("execute", "lab", "grow(minutes=60)", env=env)
    return env


@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
def test_bad_input_exits_1_with_one_line_and_changes_nothing(case, lab_home, tmp_path):
    args, message = BAD_INPUT[case]
    before = stored(lab_home)
    refused(bioxen(*args, env=lab_home, cwd=tmp_path), message)
    assert stored(lab_home) == before
    assert before[0]["simulated_time_min"] == pytest.approx(60)


def test_malformed_or_mismatched_config_files_create_nothing(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("resources: [\n")
    refused(bioxen("create", "c", "syn3a", "--config", str(broken)), f"{broken}:2:")
    schema = tmp_path / "schema.json"
    schema.write_text('{"resources": {"atp_percent": 150}, "colour": "blue"}')
    refused(bioxen("create", "c", "syn3a", "--config", str(schema)),
            "resources.atp_percent", "colour")
    other = tmp_path / "ecoli.json"
    other.write_text('{"biological_type": "ecoli"}')
    refused(bioxen("create", "c", "syn3a", "--config", str(other)), "is a config for 'ecoli'")
    bad_package = tmp_path / "pkg.json"
    bad_package.write_text('{"packages": ["gfp_reporter", "nothing"]}')
    refused(bioxen("create", "c", "syn3a", "--config", str(bad_package)), "unknown package")
    refused(bioxen("create", "c", "syn3a", "--vm-type", "xcpng"),
            "xcpng_config: required when vm_type is 'xcpng'")
    assert data("list") == []


def test_a_config_file_sets_caps_packages_and_simulation(tmp_path):
    config = tmp_path / "cell.yaml"
    config.write_text("resources:\n  atp_percent: 80\npackages: [gfp_reporter]\n"
                      "simulation:\n  stochastic: true\n  seed: 7\n")
    ok("create", "c", "syn3a", "--config", str(config), "--auto-start")
    status = data("status", "c")
    assert status["allocations"] == {"atp_percent": 80.0}
    assert status["installed_packages"] == ["gfp_reporter"]
    assert status["metrics"]["mode"] == "stochastic"


def test_xcpng_from_a_config_file_surfaces_the_backend_error_as_exit_1(tmp_path):
    """No password in the environment: refused before any connection, and nothing kept."""
    config = tmp_path / "xcpng.yaml"
    ok("config", "template", "syn3a", "xcpng", "--output", str(config))
    env = {k: v for k, v in os.environ.items() if k != "XCPNG_PASSWORD"}  # never dial out
    run = subprocess.run(
        [sys.executable, "-m", "bioxen_flows", "create", "x", "syn3a", "--vm-type", "xcpng",
         "--config", str(config)], capture_output=True, encoding="utf-8", timeout=120, env=env)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("bioxen: error: ")]
    assert len(errors) == 1 and "XCP-ng" in errors[0] and lines[-1] == errors[0]
    assert all(line.startswith("bioxen: warning: ") for line in lines[:-1])  # library warnings
    assert data("list") == []


# ---- usage errors: exit 2 -------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    (), ("create", "only-an-id"), ("create", "a", "syn3a", "--vm-type", "kvm"),
    ("execute", "lab"), ("execute", "lab", "grow(1)", "--file", "p.txt"), ("allocate", "lab"),
    ("monitor", "lab", "--interval", "soon"), ("config",), ("config", "template"),
    ("completion", "tcsh"), ("frobnicate",),
])
def test_usage_errors_exit_2(args):
    run = bioxen(*args)
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert "usage: bioxen" in run.stderr and "Traceback" not in run.stderr


# ---- config ---------------------------------------------------------------------------------
def test_config_template_validates_and_creates(tmp_path):
    template = data("config", "template", "ecoli", "basic", "--format", "json")
    assert template["biological_type"] == "ecoli" and template["vm_type"] == "basic"
    path = tmp_path / "ecoli.json"
    path.write_text(json.dumps(template))
    assert ok("config", "validate", str(path)).stdout.strip() == (
        f"{path}: valid config for ecoli on basic")
    ok("create", "from-template", "ecoli", "--config", str(path))
    assert data("list")[0]["biological_type"] == "ecoli"
    yaml_text = ok("config", "template", "syn3a", "xcpng").stdout
    assert "xcpng_config:" in yaml_text and "password:" not in yaml_text
    refused(bioxen("config", "template", "yeast", "basic"), "unknown biological_type 'yeast'")


def test_config_validate_lists_each_error_and_exits_1(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("resources:\n  atp_percent: 150\n  ribosomes: 0\n"
                    "simulation:\n  stochastic: true\n")
    run = bioxen("config", "validate", str(path), "--vm-type", "basic", "--bio-type", "syn3a")
    assert run.returncode == 1
    errors = run.stderr.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith(f"bioxen: error: {path}: ") for e in errors)
    assert [e.split(": ")[3] for e in errors] == [
        "resources.atp_percent", "resources.ribosomes", "simulation"]
    report = json.loads(bioxen("config", "validate", str(path), "--bio-type", "syn3a",
                               "--vm-type", "xcpng", "--json").stdout)
    assert report["ok"] is False and len(report["errors"]) == 4  # + xcpng_config required
    broken = tmp_path / "broken.json"
    broken.write_text('{"resources": ')
    refused(bioxen("config", "validate", str(broken), "--bio-type", "syn3a"), f"{broken}:1:")
    unnamed = tmp_path / "unnamed.json"
    unnamed.write_text("{}")
    refused(bioxen("config", "validate", str(unnamed)), "pass --bio-type")


# ---- genome ---------------------------------------------------------------------------------
@pytest.mark.skipif(not SYN3A_GENBANK.is_file(), reason="shared/data/syn3A.gb not present")
def test_genome_import_summarises_and_attaches_to_a_vm(tmp_path):
    summary = data("genome", "import", str(SYN3A_GENBANK))
    assert (summary["accession"], summary["length_bp"]) == ("CP016816.2", 543_379)
    assert (summary["protein_coding"], summary["rna"]) == (455, 38)
    assert "CP016816.2" in ok("genome", "import", str(SYN3A_GENBANK)).stdout

    essentiality = tmp_path / "essentiality.csv"
    essentiality.write_text("locus_tag,essentiality\nJCVISYN3A_0001,essential\n"
                            "JCVISYN3A_0002,quasiessential\n")
    ok("create", "s", "syn3a")
    attached = data("genome", "import", str(SYN3A_GENBANK), "--essentiality",
                    str(essentiality), "--vm", "s")
    assert attached["essentiality"] == {"essential": 1, "quasiessential": 1}
    genome = data("status", "s")["config"]["genome"]
    assert genome == {"genbank_file": str(SYN3A_GENBANK.resolve()),
                      "essentiality_file": str(essentiality.resolve())}

    bad = tmp_path / "bad.csv"
    bad.write_text("locus_tag,essentiality\nNOT_A_GENE,essential\n")
    refused(bioxen("genome", "import", str(SYN3A_GENBANK), "--essentiality", str(bad),
                   "--vm", "s"), "NOT_A_GENE")
    assert data("status", "s")["config"]["genome"] == genome


def test_genome_import_refuses_a_file_that_is_not_genbank(tmp_path):
    text = tmp_path / "notes.gb"
    text.write_text("not a genome\n")
    refused(bioxen("genome", "import", str(text)), "not a GenBank file")
    refused(bioxen("genome", "import", str(tmp_path / "missing.gb")), "GenBank file not found")


# ---- performance, completion, start-up cost ------------------------------------------------
def test_performance_times_scratch_vms_and_leaves_the_store_alone():
    ok("create", "mine", "syn3a")
    before = stored()
    report = data("performance", "ecoli", "--minutes", "10")
    ops = report["operations"]
    for name in ("create_bio_vm", "start", "execute_biological_process", "destroy"):
        assert ops[name]["calls"] == 1 and ops[name]["failures"] == 0
    assert stored() == before


def test_completion_script_and_argcomplete_protocol(tmp_path):
    script = ok("completion", "bash").stdout
    assert "complete" in script and "bioxen" in script
    ok("create", "lab1", "syn3a")
    out = tmp_path / "completions"

    def complete(line: str) -> list[str]:
        env = {"_ARGCOMPLETE": "1", "_ARGCOMPLETE_SHELL": "bash", "COMP_LINE": line,
               "COMP_POINT": str(len(line)), "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
               "_ARGCOMPLETE_IFS": "\n"}
        run = bioxen(env=env)
        assert run.returncode == 0, run.stderr
        return out.read_text().split()

    assert complete("bioxen cr") == ["create"]
    assert complete("bioxen start l") == ["lab1"]  # VM ids come from the state store
    assert complete("bioxen create new m") == ["minimal_cell"]


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("bioxen") is None,
                    reason="needs bash and the installed `bioxen` script")
def test_bash_completion_really_completes():
    ok("create", "lab1", "syn3a")
    run = subprocess.run(["bash", "-c", """
        eval "$(bioxen completion bash)"
        COMP_LINE="bioxen destroy la"; COMP_POINT=${#COMP_LINE}
        COMP_WORDS=(bioxen destroy la); COMP_CWORD=2
        _python_argcomplete bioxen la destroy
        echo "${COMPREPLY[*]}"
    """], capture_output=True, encoding="utf-8", timeout=60, env=os.environ.copy())
    assert run.stdout.split() == ["lab1"], run.stderr


PROBE = """
import sys
from bioxen_flows.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("HEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [("--help",), ("list",), ("list", "--json")])
def test_help_and_list_import_neither_prefect_nor_the_model(args):
    ok("create", "lab", "syn3a")
    run = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
                         capture_output=True, encoding="utf-8", timeout=60, env=os.environ.copy())
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip().splitlines()[-1] == "HEAVY="
    assert "usage: bioxen" in run.stdout or "lab" in run.stdout


@pytest.mark.skipif(shutil.which("bioxen") is None, reason="`bioxen` script not installed")
def test_console_script_and_python_m_are_the_same_program():
    script = subprocess.run(["bioxen", "--help"], capture_output=True, encoding="utf-8", timeout=60)
    module = ok("--help")
    assert script.returncode == 0 and script.stdout == module.stdout
    assert ok("--version").stdout.startswith("bioxen ")


MODEL = ("roadrunner", "numpy", "antimony")


@pytest.mark.parametrize("args", [("status", "lab"), ("status", "lab", "--json"),
                                  ("stop", "lab"), ("start", "lab"), ("destroy", "lab"),
                                  ("allocate", "lab", "--atp", "40", "--ribosomes", "900")])
def test_state_commands_compile_no_model(args):
    """status reads the metrics recorded with the VM's state; lifecycle changes and caps
    need no cell."""
    ok("create", "lab", "syn3a", "--auto-start")
    if args[0] == "start":
        ok("stop", "lab")
    expected = data("status", "lab")["metrics"] if args[0] == "status" else None
    run = subprocess.run([sys.executable, "-c", PROBE.format(heavy=MODEL), *args],
                         capture_output=True, encoding="utf-8", timeout=60, env=os.environ.copy())
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip().splitlines()[-1] == "HEAVY="
    if args[-1] == "--json":
        shown = json.loads(run.stdout[:run.stdout.rindex("}") + 1])["metrics"]
        assert shown == expected
        assert shown["doubling_time_min"] == pytest.approx(105, rel=0.1)  # the model's number
    elif args[0] == "status":
        assert "doubling time" in run.stdout
    elif args[0] == "allocate":
        metrics = data("status", "lab")["metrics"]
        assert (metrics["atp_cap_percent"], metrics["ribosome_cap"]) == (40.0, 900.0)


def test_caps_set_without_the_model_are_what_the_model_would_set():
    """A CLI allocate writes the caps into the stored state without building the cell; the
    VM then behaves exactly as one capped with its cell built."""
    from bioxen_flows.vm import load_bio_vm

    for vm_id in ("cold", "warm"):
        ok("create", vm_id, "ecoli", "--auto-start")
    ok("allocate", "cold", "--atp", "35", "--ribosomes", "4000")  # a process with no cell
    warm = load_bio_vm("warm")
    warm.get_biological_metrics()  # build it here, so the caps go to a live cell
    warm.allocate(atp_percent=35, ribosomes=4000)
    cold = load_bio_vm("cold")
    assert cold.recorded_metrics() == warm.recorded_metrics()
    assert cold.get_biological_metrics() == warm.get_biological_metrics()
    for vm in (cold, warm):
        vm.execute_biological_process("grow(minutes=60)")
    assert cold.get_biological_metrics() == warm.get_biological_metrics()
    assert cold.get_biological_metrics()["atp_cap_percent"] == 35.0


@pytest.mark.parametrize("atp,ribosomes", [("29", "1"), ("0.1", "40000"), ("100", "7")])
def test_caps_without_the_model_match_it_at_awkward_values(atp, ribosomes):
    """29 % is 0.29 in the model, which reads back as 28.999999999999996 %: the recorded
    metrics must say what the model says, at the extremes of the allowed ranges too."""
    from bioxen_flows.vm import load_bio_vm

    for vm_id in ("cold", "warm"):
        ok("create", vm_id, "syn3a")
    ok("allocate", "cold", "--atp", atp, "--ribosomes", ribosomes)
    warm = load_bio_vm("warm")
    warm.get_biological_metrics()
    warm.allocate(atp_percent=float(atp), ribosomes=int(ribosomes))
    assert load_bio_vm("cold").recorded_metrics() == warm.recorded_metrics()


def test_long_vm_lists_print_as_plain_columns():
    from bioxen_flows.cli import vms

    listing = [{"vm_id": f"v{i}", "biological_type": "syn3a", "vm_type": "basic",
                "state": "created", "uptime_seconds": 0.0, "simulated_time_min": 0.0,
                "allocations": {}} for i in range(vms.PLAIN_LIST_ROWS + 1)]
    from bioxen_flows.cli.output import plain_table

    lines = plain_table(vms.VM_COLUMNS, vms._vm_rows(listing)).splitlines()
    assert lines[0].split() == ["VM", "organism", "infra", "state", "uptime", "sim", "time",
                                "caps"]
    assert len(lines) == len(listing) + 1 and lines[-1].split()[0] == f"v{len(listing) - 1}"
