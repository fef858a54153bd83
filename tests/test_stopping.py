"""Stop means stop: one Ctrl-C in a terminal cancels a run cleanly, and nothing outlives it.

The commands run in a pseudo-terminal (pexpect), as a user runs them: Ctrl-C there is the
terminal's SIGINT to the whole foreground process group (the command, its simulation
workers and its temporary Prefect server), which is what used to print screens of
tracebacks and leave the run hanging.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import pexpect
import psutil

from bioxen_flows.vm import list_bio_vms

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
STOP_WITHIN_S = 20  # the bound for exit after one Ctrl-C
RUN_ID = re.compile(r"runs/flow-run/([0-9a-f-]{36})")


def _spawn(args: list[str], cwd: Path, env: dict[str, str]) -> pexpect.spawn:
    return pexpect.spawn(sys.executable, ["-m", "bioxen_flows.cli", *args], cwd=str(cwd),
                         env={**os.environ, "COLUMNS": "120", **env}, timeout=240,
                         encoding="utf-8", codec_errors="replace")


def _interrupt_after(child: pexpect.spawn, pattern: str) -> tuple[str, str, list[psutil.Process]]:
    """Wait for `pattern`, press Ctrl-C once; (output before, output after, the command's
    descendants at that moment). Fails unless it exits within STOP_WITHIN_S."""
    child.expect(pattern)
    before = child.before + child.after
    tree = psutil.Process(child.pid).children(recursive=True)
    for process in tree:
        process.info = {"cmdline": " ".join(process.cmdline())}  # while it still runs
    child.sendintr()  # the terminal's VINTR: SIGINT to the foreground process group
    child.expect(pexpect.EOF, timeout=STOP_WITHIN_S)
    child.close()
    return before, child.before, tree


def _lines(text: str) -> list[str]:
    plain = ANSI.sub("", text).replace("\r", "\n")
    return [line.strip() for line in plain.splitlines() if line.strip()]


def _assert_clean_stop(child: pexpect.spawn, after: str, tree: list[psutil.Process]) -> str:
    """Exit 130, one bioxen line, no traceback, no process of the command left."""
    assert child.exitstatus == 130, (child.exitstatus, child.signalstatus, after[-2000:])
    lines = _lines(after)
    said = [line for line in lines if "bioxen:" in line]
    assert len(said) == 1 and "cancelled" in said[0], lines
    assert not any(word in after for word in ("Traceback", "KeyboardInterrupt", "ERROR")), after
    assert tree, "the command had started no worker or server"
    gone, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive, [(p.pid, p.cmdline()) for p in alive]
    assert list_bio_vms() == []
    return said[0]


def test_one_ctrl_c_cancels_a_comparison(tmp_path: Path, prefect_api_url: str) -> None:
    """Mid-run, with some batches done: exit 130 within seconds, one line naming the partial
    results, no VM, no worker, the run Cancelled on the server with no task run left
    running, and a results folder marked partial that holds the VMs that finished."""
    child = _spawn(["compare", "syn3a", "minimal_cell", "--replicates", "12", "--hours", "6",
                    "--workers", "2", "--out", "out"], tmp_path,
                   {"PREFECT_API_URL": prefect_api_url})
    # a whole batch done (the bar also moves within VMs, so its count is not whole VMs)
    before, after, tree = _interrupt_after(
        child, r"simulate-bio-vms-\S+ - Finished in state \S*Completed")
    line = _assert_clean_stop(child, after, tree)

    [run_dir] = [p for p in (tmp_path / "out").iterdir() if p.name != "latest"]
    assert str(run_dir.name) in line
    record = json.loads((run_dir / "run.json").read_text())
    assert record["complete"] is False and record["state"] == "Cancelled"
    assert 1 <= record["vms_done"] < record["vms"] == 24
    import pandas as pd

    summary = pd.read_csv(run_dir / "summary.csv")
    assert summary["replicates"].sum() == record["vms_done"]
    assert not (tmp_path / "out" / "latest").exists()  # latest never points at a partial run

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    [run_id] = set(RUN_ID.findall(ANSI.sub("", before)))
    with temporary_settings({PREFECT_API_URL: prefect_api_url}):
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(run_id))
            tasks = client.read_task_runs(
                flow_run_filter=_run_filter(run_id))
    assert run.state.is_cancelled(), run.state
    assert tasks and all(t.state.is_final() for t in tasks), [t.state.name for t in tasks]


def _run_filter(run_id: str):  # noqa: ANN202
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id)]))


def test_one_ctrl_c_cancels_a_sweep_and_its_temporary_server(tmp_path: Path) -> None:
    """No Prefect API configured: the command's own temporary server is in the process
    group Ctrl-C reaches; it must not die first (the flow would hang on it) and must not
    outlive the command."""
    env = {k: "" for k in os.environ if k.startswith("PREFECT_API_URL")}
    child = _spawn(["sweep", "syn3a", "ecoli", "--package", "gfp_reporter",
                    "--strength", "0.5,1,2,4,8", "--copies", "1,3", "--hours", "24",
                    "--seed", "7", "--workers", "2", "--out", "out"], tmp_path, env)
    _, after, tree = _interrupt_after(child,
                                      r"simulate-cohort-\S+ - Finished in state \S*Completed")
    assert any("uvicorn" in p.info["cmdline"] for p in tree)  # the temporary server
    _assert_clean_stop(child, after, tree)
    [run_dir] = [p for p in (tmp_path / "out").iterdir() if p.name != "latest"]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["complete"] is False and 1 <= record["vms_done"] < record["vms"]


def test_a_second_ctrl_c_quits_at_once(tmp_path: Path, prefect_api_url: str) -> None:
    """Ctrl-C twice in a row: the command ends at once (130), its workers with it, and what
    it left is for `bioxen gc`."""
    child = _spawn(["compare", "ecoli", "--replicates", "4", "--hours", "12", "--workers", "2",
                    "--out", "out"], tmp_path, {"PREFECT_API_URL": prefect_api_url})
    child.expect(r"comparing ecoli")
    time.sleep(2)  # the workers are starting
    tree = psutil.Process(child.pid).children(recursive=True)
    child.sendintr()
    child.sendintr()
    child.expect(pexpect.EOF, timeout=STOP_WITHIN_S)
    child.close()
    assert child.exitstatus == 130
    assert "Traceback" not in child.before
    gone, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive


def test_workers_end_with_a_flow_killed_by_sigkill(tmp_path: Path, prefect_api_url: str) -> None:
    """kill -9 of the flow's process: its simulation workers notice within a second and end,
    so none goes on creating VMs for a run that is over (they used to run for minutes)."""
    code = ("from bioxen_flows.orchestration.compare import compare_organisms\n"
            "compare_organisms(organisms=['ecoli', 'syn3a'], replicates=6, hours=12, "
            "seed=1, out_dir='out')\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path,
                            env={**os.environ, "PREFECT_API_URL": prefect_api_url},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(psutil.Process(proc.pid).children()) < 2 or not list_bio_vms():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        workers = psutil.Process(proc.pid).children()
        proc.kill()
        proc.wait()
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, [p.cmdline() for p in alive]
        created = {vm["vm_id"] for vm in list_bio_vms()}
        time.sleep(2)
        assert {vm["vm_id"] for vm in list_bio_vms()} <= created  # nothing new after the kill
    finally:
        if proc.poll() is None:
            proc.kill()


def test_runs_the_scheduler_creates_together_get_folders_and_vms_of_their_own(
    tmp_path: Path, prefect_api_url: str
) -> None:
    """The scheduler inserts a deployment's runs in one batch, with time-ordered (UUIDv7)
    ids that share their first digits; the run folders and VM ids must still differ."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import IntervalSchedule
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from bioxen_flows.orchestration.batching import comparison_specs
    from bioxen_flows.orchestration.reporting import run_directory

    with temporary_settings({PREFECT_API_URL: prefect_api_url}):
        with get_client(sync_client=True) as client:
            flow_id = client.create_flow_from_name("compare-organisms")
            deployment_id = client.create_deployment(
                flow_id, f"batch-{tmp_path.name}",
                schedules=[DeploymentScheduleCreate(schedule=IntervalSchedule(interval=60))])
            response = client._client.post(f"/deployments/{deployment_id}/schedule",
                                           json={"min_runs": 6, "max_runs": 6})
            response.raise_for_status()
            runs = client.read_flow_runs(
                deployment_filter=_deployment_filter(deployment_id))
    assert len(runs) == 6
    assert len({str(run.id)[:8] for run in runs}) < 6  # what the folders used to be named by
    folders = {run_directory(tmp_path, run.name, str(run.id)) for run in runs}
    vm_ids = {spec.vm_id for run in runs
              for spec in comparison_specs(["syn3a"], 2, str(run.id))}
    assert len(folders) == 6 and len(vm_ids) == 12


def _deployment_filter(deployment_id: UUID):  # noqa: ANN202
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
