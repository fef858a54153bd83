"""Beyond one machine: comparisons and sweeps on a Dask cluster of separate hosts.

The hosts are Linux namespaces (`bioxen_flows.testing.multihost`): a scheduler and two
workers, each with its own network address on a private bridge, host name and tmpfs (no
shared BIOXEN_HOME, model cache or scratch space). PostgreSQL and the Prefect server are
reached over the bridge, not loopback. The flow runs in this process, a third host.
Skipped where namespaces cannot be made (not root, no iproute2)."""

from __future__ import annotations

import contextvars
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from bioxen_flows.testing.multihost import DaskHosts, TestBed, bridged_url, unavailable

pytest.importorskip("prefect_dask", reason="the optional dask extra: pip install -e '.[dask]'")
_why = unavailable()
pytestmark = [pytest.mark.skipif(_why is not None, reason=_why or ""),
              pytest.mark.usefixtures("prefect_api_url")]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres_url: str,
            prefect_api_url: str) -> Iterator[DaskHosts]:
    from sqlalchemy.engine import make_url

    root = tmp_path_factory.mktemp("multihost") / "hosts"
    with TestBed(root, ["sched", "w1", "w2"]) as bed:
        db = bed.forward(make_url(postgres_url).port or 5432)
        api = bed.forward(int(re.search(r":(\d+)/api", prefect_api_url).group(1)))
        made = DaskHosts(bed, "sched", bridged_url(postgres_url, db), f"http://{api}/api")
        made.start_worker("w1")
        made.start_worker("w2")
        made.wait_for_workers(2)
        yield made


@pytest.fixture
def on_cluster(cluster: DaskHosts, monkeypatch: pytest.MonkeyPatch,
               postgres_url: str) -> Iterator[DaskHosts]:
    """This process as the flow's host: the shared store, the API by its bridge address."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.helpers import empty_postgres

    empty_postgres(postgres_url)
    monkeypatch.setenv("BIOXEN_DATABASE_URL", postgres_url)  # by loopback: same database
    with temporary_settings({PREFECT_API_URL: cluster.api_url}):
        try:
            yield cluster
        finally:  # Prefect's events worker keeps the URL it started with: not the bridge's
            from prefect.events.worker import EventsWorker

            EventsWorker.drain_all(timeout=10)


COMPARISON = {"organisms": ["syn3a", "ecoli"], "replicates": 2, "hours": 0.25, "seed": 5,
              "package": "rfp_plasmid", "batch_size": 1}


def test_comparison_across_hosts_equals_the_local_one(
    on_cluster: DaskHosts, tmp_path: Path
) -> None:
    from distributed import Client

    from bioxen_flows.orchestration.compare import compare_organisms
    from bioxen_flows.vm import list_bio_vms

    remote = compare_organisms(**COMPARISON, out_dir=str(tmp_path / "dask"),
                               dask_address=on_cluster.address)
    local = compare_organisms(**COMPARISON, out_dir=str(tmp_path / "local"))
    assert remote["vms"] == local["vms"] == 8  # 2 x (2 cells + 2 controls)
    assert remote["summary"] == local["summary"]  # stochastic, fixed seeds: identical
    series = [pd.read_parquet(r["paths"]["timeseries_parquet"]) for r in (remote, local)]
    pd.testing.assert_frame_equal(*(s.drop(columns=["vm_id"]) for s in series))
    ode = {**COMPARISON, "replicates": 1, "seed": None, "deterministic": True}
    pd.testing.assert_frame_equal(
        pd.DataFrame(compare_organisms(**ode, out_dir=str(tmp_path / "d1"),
                                       dask_address=on_cluster.address)["summary"]),
        pd.DataFrame(compare_organisms(**ode, out_dir=str(tmp_path / "d2"))["summary"]),
        rtol=1e-9)
    assert list_bio_vms() == []
    # each worker compiled the models into its own home; none of it is on this host
    with Client(on_cluster.address) as client:
        homes = client.run(lambda: sorted(
            str(p.relative_to(os.environ["BIOXEN_HOME"]))
            for p in Path(os.environ["BIOXEN_HOME"]).rglob("*") if p.is_file()))
        hosts = client.run(lambda: __import__("socket").gethostname())
    assert len(set(hosts.values())) == 2 and os.uname().nodename not in hosts.values()
    assert all(any("ssa-kernels" in f for f in files) for files in homes.values())
    assert not (on_cluster.bed.root / "home").exists()  # this host never saw their homes


def test_sweep_across_hosts_equals_the_local_one(on_cluster: DaskHosts, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from bioxen_flows.orchestration.sweep import sweep_design_space
    from bioxen_flows.vm import list_bio_vms

    space = {"organisms": ["syn3a", "ecoli"], "package": "gfp_reporter",
             "strengths": [0.5, 1, 2], "copies": [1, 3], "hours": 2.0}
    monkeypatch.setenv("BIOXEN_RESULT_STORAGE", str(tmp_path / "cache-dask"))
    remote = sweep_design_space(**space, out_dir=str(tmp_path / "dask"),
                                dask_address=on_cluster.address)
    monkeypatch.setenv("BIOXEN_RESULT_STORAGE", str(tmp_path / "cache-local"))
    local = sweep_design_space(**space, out_dir=str(tmp_path / "local"))
    frames = [pd.read_csv(Path(r["out_dir"]) / "summary.csv") for r in (remote, local)]
    pd.testing.assert_frame_equal(*(f.drop(columns=[c for c in f if c in ("run_id",
                                  "run_name", "vm_id")]) for f in frames), rtol=1e-9)
    assert remote["reused"] == 0 and list_bio_vms() == []
    # the flow wrote the workers' results to its own cache: a second sweep reuses them all
    monkeypatch.setenv("BIOXEN_RESULT_STORAGE", str(tmp_path / "cache-dask"))
    again = sweep_design_space(**space, out_dir=str(tmp_path / "again"),
                               dask_address=on_cluster.address)
    assert again["reused"] == again["points"] == 12


def test_a_worker_killed_mid_run_loses_nothing(on_cluster: DaskHosts, tmp_path: Path) -> None:
    """kill -9 of a worker's process tree while its batch runs: Dask runs the batch again
    on the other worker, the run completes in full, and no VM is left behind."""
    from bioxen_flows.orchestration.compare import compare_organisms
    from bioxen_flows.state import StateStore
    from bioxen_flows.vm import list_bio_vms

    params = {"organisms": ["ecoli"], "replicates": 4, "hours": 4.0, "seed": 11,
              "batch_size": 1}
    outcome: dict[str, object] = {}

    def run() -> None:
        outcome["result"] = compare_organisms(**params, out_dir=str(tmp_path / "lost"),
                                              dask_address=on_cluster.address)

    thread = threading.Thread(target=contextvars.copy_context().run, args=(run,))
    thread.start()
    deadline = time.monotonic() + 120
    while len([v for v in list_bio_vms() if v["state"] == "running"]) < 2:
        assert thread.is_alive() and time.monotonic() < deadline, "no batch ever ran"
        time.sleep(0.2)
    on_cluster.bed.kill_host("w1")
    thread.join(timeout=600)
    try:
        result = outcome["result"]
        assert isinstance(result, dict) and result["vms"] == 4
        assert len(result["summary"]) == 1 and result["summary"][0]["replicates"] == 4
        assert list_bio_vms() == []
        remade = [e for e in StateStore().audit_log(limit=10_000)
                  if "lost with its worker" in str(e.get("detail"))]
        assert remade, "the lost worker's batch was never made again"
        again = compare_organisms(**params, out_dir=str(tmp_path / "whole"))
        assert again["summary"] == result["summary"]  # the same cells, seed for seed
    finally:
        on_cluster.start_worker("w1")
        on_cluster.wait_for_workers(2)


def test_a_network_outage_of_one_worker_host_is_ridden_out(on_cluster: DaskHosts,
                                                           tmp_path: Path) -> None:
    """w2's link down for 10 s while both workers run a batch (PostgreSQL, the Prefect API
    and the scheduler all unreachable from it): its store and API calls wait (open
    connections retransmit, new ones are tried again) and go on; the run completes with
    every VM, the same results as without the outage, and nothing left."""
    from bioxen_flows.orchestration.compare import compare_organisms
    from bioxen_flows.vm import list_bio_vms

    params = {"organisms": ["ecoli"], "replicates": 4, "hours": 4.0, "seed": 3,
              "batch_size": 1}
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = compare_organisms(**params, out_dir=str(tmp_path / "blip"),
                                                  dask_address=on_cluster.address)
        except Exception as error:  # noqa: BLE001 (reported by the assertion below)
            outcome["error"] = error

    thread = threading.Thread(target=contextvars.copy_context().run, args=(run,))
    thread.start()
    deadline = time.monotonic() + 120
    while len([v for v in list_bio_vms() if v["state"] == "running"]) < 2:
        assert thread.is_alive() and time.monotonic() < deadline, "no batch ever ran"
        time.sleep(0.1)
    down = time.monotonic()
    on_cluster.bed.link_down("w2", 10)
    thread.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert isinstance(result, dict) and result["vms"] == 4
    assert time.monotonic() - down >= 10
    assert list_bio_vms() == []
    again = compare_organisms(**params, out_dir=str(tmp_path / "whole"))
    assert again["summary"] == result["summary"]


def test_cli_runs_on_the_cluster_and_refuses_a_cluster_without_the_store(
    on_cluster: DaskHosts, tmp_path: Path
) -> None:
    env = {**os.environ, "PREFECT_API_URL": on_cluster.api_url, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "bioxen_flows", "compare", "syn3a", "--hours", "0.5",
         "--deterministic", "--dask-address", on_cluster.address, "--out", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "syn3a" in done.stdout
    other = {**env, "BIOXEN_DATABASE_URL": f"sqlite:///{tmp_path / 'own.db'}"}
    refused = subprocess.run(
        [sys.executable, "-m", "bioxen_flows", "compare", "syn3a", "--deterministic",
         "--dask-address", on_cluster.address, "--out", str(tmp_path)],
        env=other, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1
    assert "use another state store" in refused.stderr
    assert refused.stderr.strip().count("\n") == 0, refused.stderr


def test_one_ctrl_c_stops_a_run_on_the_cluster(on_cluster: DaskHosts, tmp_path: Path) -> None:
    """In a terminal, mid-run: exit 130 within seconds with one line, batches not started
    never start, and every VM of the run is gone once the running batches end."""
    import pexpect

    from bioxen_flows.vm import list_bio_vms

    child = pexpect.spawn(
        sys.executable, ["-m", "bioxen_flows", "compare", "ecoli", "--replicates", "12",
                         "--hours", "4", "--dask-address", on_cluster.address, "--out", "out"],
        cwd=str(tmp_path), env={**os.environ, "COLUMNS": "120", "PYTHONPATH": str(REPO),
                                "PREFECT_API_URL": on_cluster.api_url},
        timeout=240, encoding="utf-8", codec_errors="replace")
    child.expect(r"\b(?:[1-9]|1[01])\.\d/12 VMs")  # the bar: some batches, not all, done
    child.sendintr()
    child.expect(pexpect.EOF, timeout=20)
    child.close()
    said = [line for line in child.before.replace("\r", "\n").splitlines() if "bioxen:" in line]
    assert child.exitstatus == 130, child.before[-2000:]
    assert len(said) == 1 and "cancelled" in said[0], child.before[-2000:]
    assert "Traceback" not in child.before
    deadline = time.monotonic() + 60
    while list_bio_vms():
        assert time.monotonic() < deadline, list_bio_vms()
        time.sleep(0.5)
    time.sleep(5)  # nothing cancelled starts later
    assert list_bio_vms() == []
