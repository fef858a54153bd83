"""Peak memory and time of the worst inputs BioXen accepts (issue 11: <= 500 MiB each).

Each case runs in a fresh `bioxen` process with its own BIOXEN_HOME; the figure is that
process's peak RSS (ru_maxrss of the child). Run: python bench/hostile_limits.py
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(home: Path, *args: str) -> tuple[float, float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bioxen_flows", *args], capture_output=True,
                          env={**os.environ, "BIOXEN_HOME": str(home)})
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} failed: {proc.stderr.decode()[-500:]}")
    return seconds, max(peak, before) / 1024, len(proc.stdout)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        module = home / "big.ant"
        module.write_text("w_het = 100; n_het = 300;\n" + "".join(
            f"k{i} = {i};\n" for i in range(497)))
        program = "\n".join(["grow(minutes=10080)"] * 10)  # 100,800 min: the limit
        many = "\n".join(["grow(minutes=201.5)"] * 500)  # 500 lines, 100,750 min
        run(home, "create", "v", "ecoli", "--auto-start")
        run(home, "create", "s", "syn3a", "--auto-start", "--config", str(_stoch(home)))
        cases = [
            ("create VM (first model compile)", ("create", "w", "syn3a")),
            ("10 x grow(10080), --json", ("execute", "v", program, "--json")),
            ("500 x grow(201.5), --json", ("execute", "v", many, "--json")),
            ("install a 500-element module", ("install", "v", str(module))),
            ("grow 10080 min with that module, --json",
             ("execute", "v", "grow(minutes=10080)", "--json")),
            ("stochastic syn3a: grow(1440), --json", ("execute", "s", "grow(1440)", "--json")),
        ]
        print(f"{'case':45} {'seconds':>8} {'peak RSS MiB':>13} {'stdout MB':>10}")
        for name, args in cases:
            seconds, mib, out = run(home, *args)
            print(f"{name:45} {seconds:8.1f} {mib:13.0f} {out / 1e6:10.1f}")


def _stoch(home: Path) -> Path:
    path = home / "stoch.yaml"
    path.write_text("simulation:\n  stochastic: true\n  seed: 7\n")
    return path


if __name__ == "__main__":
    main()
