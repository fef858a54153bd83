"""Allocations are caps that change the dynamics, and the host budget is never exceeded."""

from __future__ import annotations

import threading
from itertools import pairwise

import pytest

from bioxen_flows.engine.hypervisor import Hypervisor


def balanced_growth(hv: Hypervisor, vm_id: str) -> dict:
    cell = hv.cell(vm_id)
    cell.grow(2e4, points=2)
    return cell.metrics()


def test_lower_atp_allocation_slows_growth_monotonically():
    hv = Hypervisor()
    growth = []
    for i, percent in enumerate((100, 80, 60, 40, 20)):
        hv.create_cell(f"vm{i}", "ecoli")
        hv.allocate_atp(f"vm{i}", percent)
        growth.append(balanced_growth(hv, f"vm{i}")["growth_rate_per_min"])
    assert all(a > b for a, b in pairwise(growth))


def test_lower_ribosome_cap_slows_growth_and_holds_the_ceiling():
    hv = Hypervisor()
    growth = []
    for i, cap in enumerate((3000, 2000, 1000, 500)):
        hv.create_cell(f"vm{i}", "ecoli")
        hv.allocate_ribosomes(f"vm{i}", cap)
        m = balanced_growth(hv, f"vm{i}")
        assert m["ribosomes_total"] <= cap
        growth.append(m["growth_rate_per_min"])
    assert all(a > b for a, b in pairwise(growth))


def test_cap_far_above_need_changes_nothing():
    hv = Hypervisor()
    hv.create_cell("free", "syn3a")
    hv.create_cell("capped", "syn3a")
    hv.allocate_ribosomes("capped", 5_000)  # 10x what Syn3A holds
    assert balanced_growth(hv, "capped")["growth_rate_per_min"] == pytest.approx(
        balanced_growth(hv, "free")["growth_rate_per_min"], rel=1e-4
    )


def test_caps_also_slow_guest_expression():
    hv = Hypervisor()
    for vm_id in ("full", "half"):
        hv.create_cell(vm_id, "ecoli").install("gfp_reporter")
    hv.allocate_atp("half", 50)
    full = balanced_growth(hv, "full")["protein_synthesis_per_min"]["gfp"]
    half = balanced_growth(hv, "half")["protein_synthesis_per_min"]["gfp"]
    assert half < full


@pytest.mark.parametrize("bad", [0, -1, 100.5, float("nan"), float("inf"), True, "50"])
def test_out_of_range_atp_changes_nothing(bad):
    hv = Hypervisor()
    hv.create_cell("vm", "ecoli")
    hv.allocate_atp("vm", 40)
    with pytest.raises(ValueError, match="ATP allocation"):
        hv.allocate_atp("vm", bad)
    assert hv.allocation("vm").atp_percent == 40
    assert hv.cell("vm").metrics()["atp_cap_percent"] == pytest.approx(40)


@pytest.mark.parametrize("bad", [0, -5, 2.5, None, True, 200_001])
def test_bad_ribosome_allocation_changes_nothing(bad):
    hv = Hypervisor(ribosome_budget=200_000)
    hv.create_cell("vm", "ecoli")
    with pytest.raises(ValueError, match="ribosome allocation"):
        hv.allocate_ribosomes("vm", bad)
    assert hv.allocation("vm").ribosomes is None
    assert hv.usage()["ribosomes_allocated"] == 0


def test_unknown_vm_is_a_clear_error():
    with pytest.raises(ValueError, match="no cell for VM 'ghost'"):
        Hypervisor().allocate_atp("ghost", 10)


def test_hundred_threads_never_exceed_the_budget():
    hv = Hypervisor(ribosome_budget=7_000, atp_budget_percent=450)
    for i in range(10):
        hv.create_cell(f"vm{i}", "syn3a")
    barrier = threading.Barrier(100)
    granted: list[tuple[str, int]] = []
    refused = []

    def worker(n: int) -> None:
        vm_id = f"vm{n % 10}"
        barrier.wait()
        for _ in range(5):
            try:
                hv.allocate_ribosomes(vm_id, 700 + n)
                hv.allocate_atp(vm_id, 45 + n % 10)
                granted.append((vm_id, n))
            except ValueError:
                refused.append(n)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    usage = hv.usage()
    assert usage["ribosomes_allocated"] <= 7_000
    assert usage["atp_percent_allocated"] <= 450
    assert granted and refused  # the budget was contended and did bind
    # the ledger and the cells' caps agree
    for i in range(10):
        alloc = hv.allocation(f"vm{i}")
        metrics = hv.cell(f"vm{i}").metrics()
        if alloc.ribosomes is not None:
            assert metrics["ribosome_cap"] == alloc.ribosomes


def test_removing_a_cell_frees_its_allocation():
    hv = Hypervisor(ribosome_budget=1_000)
    hv.create_cell("a", "syn3a")
    hv.allocate_ribosomes("a", 1_000)
    hv.create_cell("b", "syn3a")
    with pytest.raises(ValueError, match="0 available"):
        hv.allocate_ribosomes("b", 1)
    hv.remove_cell("a")
    hv.remove_cell("a")
    assert hv.allocate_ribosomes("b", 1_000).ribosomes == 1_000


def test_uncapped_constant_is_the_models_default():
    from bioxen_flows.engine import UNCAPPED_RIBOSOMES
    from bioxen_flows.engine.cell import Cell

    metrics = Cell("ecoli").metrics()
    assert metrics["ribosome_cap"] == UNCAPPED_RIBOSOMES
    assert metrics["atp_cap_percent"] == 100.0
