"""Scale-out: the comparison on a Dask cluster whose workers share nothing but the database.

Each worker process gets its own empty BIOXEN_HOME, as a worker on another machine would
have; only BIOXEN_DATABASE_URL (PostgreSQL) is common. Results (stochastic, same seeds)
must equal the default process pool's, and no VM may remain."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("prefect_dask", reason="the optional dask extra: pip install -e '.[dask]'")

from distributed import Client, LocalCluster  # noqa: E402
from distributed.diagnostics.plugin import WorkerPlugin  # noqa: E402

from bioxen_flows.orchestration.compare import compare_organisms  # noqa: E402
from bioxen_flows.vm import list_bio_vms  # noqa: E402

pytestmark = pytest.mark.usefixtures("prefect_api_url")


class OwnHome(WorkerPlugin):
    """Give each worker a BIOXEN_HOME of its own (empty): the URL is all they share."""

    def __init__(self, root: str) -> None:
        self.root = root

    def setup(self, worker) -> None:  # noqa: ANN001 (distributed's hook)
        home = Path(self.root) / re.sub(r"\W", "_", str(worker.name))
        home.mkdir(parents=True, exist_ok=True)
        os.environ["BIOXEN_HOME"] = str(home)


def test_comparison_on_workers_sharing_only_the_database(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect_dask import DaskTaskRunner

    from tests.helpers import empty_postgres

    empty_postgres(postgres_url)
    monkeypatch.setenv("BIOXEN_DATABASE_URL", postgres_url)
    params = {"organisms": ["syn3a", "ecoli"], "replicates": 2, "hours": 0.25, "seed": 5,
              "package": "rfp_plasmid", "batch_size": 1}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.register_plugin(OwnHome(str(tmp_path / "workers")))
        homes = client.run(lambda: os.environ["BIOXEN_HOME"])
        assert len(set(homes.values())) == 2
        runner = DaskTaskRunner(address=cluster.scheduler_address)
        on_dask = compare_organisms.with_options(task_runner=runner)(
            **params, out_dir=str(tmp_path / "dask")
        )
        ran_tasks = client.run(lambda: os.environ["BIOXEN_HOME"])
        assert ran_tasks == homes
    on_processes = compare_organisms(**params, out_dir=str(tmp_path / "processes"))
    pd.testing.assert_frame_equal(
        pd.DataFrame(on_dask["summary"]), pd.DataFrame(on_processes["summary"]), rtol=1e-9
    )
    assert on_dask["vms"] == 8  # 2 x (2 cells + 2 controls)
    assert list_bio_vms() == []
    for home in homes.values():  # the workers kept no state of their own
        assert not (Path(home) / "state.db").exists()


@pytest.mark.parametrize("address, message", [
    ("file:///etc/passwd", "must look like tcp://HOST:PORT"),
    ("tcp://10.9.8.7:8786; rm -rf /", "must look like tcp://HOST:PORT"),
    ("tcp://" + "a" * 300 + ":8786", "must look like tcp://HOST:PORT"),
    ("tcp://10.9.8.7:8786", "set PREFECT_API_URL"),
])
@pytest.mark.parametrize("command", ["compare", "sweep"])
def test_a_dask_address_that_cannot_work_is_refused_in_one_line(
    address: str, message: str, command: str, tmp_path: Path
) -> None:
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    args = ["syn3a"] if command == "compare" else ["syn3a", "--strength", "1"]
    done = subprocess.run([sys.executable, "-m", "bioxen_flows", command, *args,
                           "--dask-address", address, "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert message in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    assert not any(tmp_path.iterdir())  # nothing started, nothing written
