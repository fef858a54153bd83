"""The README's quick start runs as written against the public API."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_runs_as_written(tmp_path):
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Quick start"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    script = tmp_path / "quick_start.py"
    script.write_text(code, encoding="utf-8")
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, encoding="utf-8", timeout=120,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith("syn3a_lab doubling") and "'gfp'" in lines[0]
    assert lines[1].startswith("ecoli_lab doubling") and "'lacZ'" in lines[1]


def test_deployments_readme_documents_every_deployment_in_prefect_yaml():
    """Each deployment of prefect.yaml is in deployments/README.md's table as `flow/deployment`
    with its entrypoint and every parameter it sets."""
    import importlib.util

    import yaml

    root = README.parent
    text = (root / "deployments" / "README.md").read_text(encoding="utf-8")
    deployments = yaml.safe_load((root / "prefect.yaml").read_text())["deployments"]
    assert len(deployments) == 5
    count = re.search(r"declares (\w+) deployments", text).group(1)
    assert count == {3: "three", 4: "four", 5: "five", 6: "six"}[len(deployments)]
    for deployment in deployments:
        path, func = deployment["entrypoint"].split(":")
        spec = importlib.util.spec_from_file_location(f"entry_{func}", root / path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        flow_name = getattr(module, func).name
        [row] = [line for line in text.splitlines()
                 if line.startswith(f"| `{flow_name}/{deployment['name']}` |")]
        assert f"`{deployment['entrypoint']}`" in row
        for parameter in deployment.get("parameters") or {}:
            assert f"`{parameter}" in row, (deployment["name"], parameter)
