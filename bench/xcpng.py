"""XCP-ng provisioning concurrency: 20 VMs at once vs one VM, against the XAPI simulator.

Each VM goes through the real provisioning steps (template lookup, clone, disk fix,
provision, tag, start, wait for a fresh guest IP) and teardown, with a simulated 3 s boot.
Goal: wall time for 20 concurrent VMs / wall time for one VM <= 2.0.

    python bench/xcpng.py [--vms 20] [--boot 3.0]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from bioxen_flows.testing.xapi_simulator import XapiSimulator
from bioxen_flows.xcpng import backend

PASSWORD = "bench-password"


def provision_and_destroy(cfg: dict, vm_id: str) -> None:
    placement = backend.provision_vm(cfg, vm_id, owner="bench")
    backend.destroy_vm(cfg, placement.vm_uuid, vm_id)


def timed(cfg: dict, count: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(lambda i: provision_and_destroy(cfg, f"bench{i}"), range(count)))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=20)
    parser.add_argument("--boot", type=float, default=3.0, help="simulated boot seconds")
    args = parser.parse_args()
    os.environ["XCPNG_PASSWORD"] = PASSWORD
    os.environ["BIOXEN_HOME"] = tempfile.mkdtemp(prefix="bioxen-bench-")  # its own installation
    with XapiSimulator(password=PASSWORD, boot_seconds=args.boot, latency_seconds=0.005) as sim:
        cfg = {"url": sim.url, "username": "root", "template": "bioxen-guest",
               # provisioning never reaches SSH; the config still names how it would
               "ssh_user": "bioxen", "ssh_key_path": "/nonexistent",
               "ssh_host_key": "SHA256:" + "A" * 43}
        one = min(timed(cfg, 1) for _ in range(2))
        many = timed(cfg, args.vms)
        leaked = len(sim.vms()) + len(sim.vdis(kind="system"))
    ratio = many / one
    print(f"simulated boot {args.boot:g} s, 5 ms per XAPI call")
    print(f"one VM (best of 2)          {one:7.2f} s")
    print(f"{args.vms} VMs concurrently        {many:7.2f} s")
    print(f"ratio {ratio:.2f}; goal <= 2.0: {'met' if ratio <= 2.0 else 'not met'}")
    print(f"VMs or disks left on the pool: {leaked}")


if __name__ == "__main__":
    main()
