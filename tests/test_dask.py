"""Scale-out: the same comparison flow on a Dask cluster (local here, many machines in a lab)."""

from __future__ import annotations

import pandas as pd
import pytest

from bioxen_flows.orchestration.flows import compare_organisms
from bioxen_flows.vm import list_bio_vms

pytestmark = pytest.mark.usefixtures("prefect_api_url")


def test_comparison_on_a_dask_cluster_matches_the_thread_runner(tmp_path):
    from prefect_dask import DaskTaskRunner

    params = {"organisms": ["syn3a", "ecoli"], "replicates": 2, "hours": 0.25,
              "package": "rfp_plasmid", "batch_size": 1}
    runner = DaskTaskRunner(
        cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True}
    )
    on_dask = compare_organisms.with_options(task_runner=runner)(
        **params, out_dir=str(tmp_path / "dask")
    )
    on_threads = compare_organisms(**params, out_dir=str(tmp_path / "threads"))
    pd.testing.assert_frame_equal(
        pd.DataFrame(on_dask["summary"]), pd.DataFrame(on_threads["summary"]), rtol=1e-9
    )
    assert on_dask["vms"] == 6
    assert list_bio_vms() == []
