"""Prefect flows on a real (test) Prefect server: results, artifacts, guaranteed teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from bioxen_flows.errors import TransientInfrastructureError
from bioxen_flows.orchestration import tasks as bioxen_tasks
from bioxen_flows.orchestration.flows import compare_organisms, vm_lifecycle
from bioxen_flows.vm import list_bio_vms
from bioxen_flows.vm.basic import BasicBiologicalVM

pytestmark = pytest.mark.usefixtures("prefect_api_url")


def read_artifacts(keys: list[str]) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )
    return {a.key: a for a in found}


def test_comparison_agrees_with_the_engine_and_publishes_results(tmp_path):
    result = compare_organisms(
        organisms=["ecoli", "syn3a"], replicates=2, hours=0.5,
        package="gfp_reporter", out_dir=str(tmp_path / "out"),
    )
    summary = pd.read_parquet(tmp_path / "out" / "summary.parquet").set_index("organism")
    assert list(summary.index) == ["ecoli", "syn3a"]
    assert summary.loc["ecoli", "replicates"] == 2
    control = summary.loc["ecoli", "control_growth_rate_per_min"]
    assert control == pytest.approx(0.02411, rel=1e-3)  # doubling 28.7 min, as the engine says
    assert 0 < summary.loc["syn3a", "burden_percent"] < summary.loc["ecoli", "burden_percent"]
    assert summary.loc["ecoli", "growth_rate_sd_per_min"] == pytest.approx(0, abs=1e-12)
    series = pd.read_parquet(tmp_path / "out" / "timeseries.parquet")
    assert len(series) == 6 * 31  # (2 replicates + 1 control) x 2 organisms x 31 minutes
    assert list(series.columns[:5]) == ["organism", "replicate", "vm_id", "role", "package"]
    assert {"time_min", "growth_rate_per_min", "atp_percent", "protein_gfp"} <= set(series)
    assert (tmp_path / "out" / "growth.png").read_bytes()[:4] == b"\x89PNG"
    assert pd.read_csv(tmp_path / "out" / "summary.csv").shape[0] == 2
    assert result["vms"] == 6
    artifacts = read_artifacts(["compare-organisms-summary", "compare-organisms-report"])
    assert set(artifacts) == {"compare-organisms-summary", "compare-organisms-report"}
    assert "data:image/png;base64," in artifacts["compare-organisms-report"].data
    assert list_bio_vms() == []


def test_comparison_without_package_reports_engine_doubling(tmp_path):
    result = compare_organisms(organisms=["ecoli"], hours=0.25, out_dir=str(tmp_path))
    (row,) = result["summary"]
    assert row["doubling_time_min"] == pytest.approx(28.7, abs=0.1)
    assert "burden_percent" not in row


def test_lifecycle_flow_runs_one_vm_and_tears_it_down():
    out = vm_lifecycle(
        organism="ecoli",
        program='install("lac_operon")\nmanage_operons(["lac"], "induce")\ngrow(minutes=30)',
    )
    assert out["metrics"]["operon_states"] == {"lac": "induced"}
    assert pd.DataFrame(out["timeseries"])["time_min"].iloc[-1] == 30
    assert list_bio_vms() == []


def test_process_error_still_tears_down(tmp_path):
    with pytest.raises(ValueError, match="unknown package"):
        compare_organisms(organisms=["syn3a", "ecoli"], hours=0.25,
                          package="no_such_package", out_dir=str(tmp_path))
    assert list_bio_vms() == []


def test_metric_collection_failure_still_tears_down(tmp_path, monkeypatch):
    def broken_sensor(self):
        raise RuntimeError("metric collection failed")

    monkeypatch.setattr(BasicBiologicalVM, "get_biological_metrics", broken_sensor)
    with pytest.raises(RuntimeError, match="metric collection failed"):
        vm_lifecycle(organism="syn3a")
    with pytest.raises(RuntimeError, match="metric collection failed"):
        compare_organisms(organisms=["syn3a"], replicates=2, hours=0.25, out_dir=str(tmp_path))
    assert list_bio_vms() == []


def test_bad_parameters_fail_before_any_vm(tmp_path):
    with pytest.raises(ValueError, match="organisms must be among"):
        compare_organisms(organisms=["yeast"], out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="hours"):
        compare_organisms(organisms=["ecoli"], hours=0, out_dir=str(tmp_path))
    assert list_bio_vms() == []


def test_transient_faults_retry_and_bad_input_does_not(monkeypatch):
    calls = []
    faults = [TransientInfrastructureError("host busy")]  # the first call hits a busy host
    real_create = bioxen_tasks.create_bio_vm

    def flaky_create(*args, **kwargs):
        calls.append(args[0])
        if faults:
            raise faults.pop()
        return real_create(*args, **kwargs)

    monkeypatch.setattr(bioxen_tasks, "create_bio_vm", flaky_create)
    assert vm_lifecycle(organism="syn3a", vm_id="flaky")["vm_id"] == "flaky"
    assert len(calls) == 2
    calls.clear()
    with pytest.raises(ValueError, match="invalid vm_id"):
        vm_lifecycle(organism="syn3a", vm_id="bad id")
    assert len(calls) == 1  # a ValueError is not retried
    assert list_bio_vms() == []


def test_killed_flow_run_leaves_no_vm(prefect_api_url, bioxen_home):
    """SIGTERM mid-run: Prefect marks the run Crashed and the on_crashed hook tears down."""
    code = (
        "from bioxen_flows.orchestration.flows import compare_organisms\n"
        "compare_organisms(organisms=['ecoli', 'syn3a'], replicates=3, hours=168, "
        "batch_size=1, out_dir='out')\n"
    )
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "BIOXEN_HOME": str(bioxen_home)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, encoding="utf-8")
    deadline = time.monotonic() + 90
    while not list_bio_vms():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no VM appeared"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert list_bio_vms() == []
