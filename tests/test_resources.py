"""Allocations are caps that change the dynamics, and the host budget is never exceeded."""

from __future__ import annotations

import threading
from itertools import pairwise

import pytest

from bioxen_flows.engine.cell import Cell
from bioxen_flows.errors import BudgetError, InputError
from bioxen_flows.state import StateStore
from bioxen_flows.vm import create_bio_vm, load_bio_vm


def balanced_growth(cell: Cell) -> dict:
    cell.grow(2e4, points=2)
    return cell.metrics()


def capped(organism: str, **caps: float) -> Cell:
    cell = Cell(organism)
    cell.set_caps(**caps)
    return cell


def test_lower_atp_allocation_slows_growth_monotonically():
    growth = [
        balanced_growth(capped("ecoli", atp_percent=p))["growth_rate_per_min"]
        for p in (100, 80, 60, 40, 20)
    ]
    assert all(a > b for a, b in pairwise(growth))


def test_lower_ribosome_cap_slows_growth_and_holds_the_ceiling():
    growth = []
    for cap in (3000, 2000, 1000, 500):
        m = balanced_growth(capped("ecoli", ribosomes=cap))
        assert m["ribosomes_total"] <= cap
        growth.append(m["growth_rate_per_min"])
    assert all(a > b for a, b in pairwise(growth))


def test_cap_far_above_need_changes_nothing():
    assert balanced_growth(capped("syn3a", ribosomes=5_000))["growth_rate_per_min"] == (
        pytest.approx(balanced_growth(Cell("syn3a"))["growth_rate_per_min"], rel=1e-4)
    )


def test_caps_also_slow_guest_expression():
    full, half = Cell("ecoli"), capped("ecoli", atp_percent=50)
    for cell in (full, half):
        cell.install("gfp_reporter")
    assert (balanced_growth(half)["protein_synthesis_per_min"]["gfp"]
            < balanced_growth(full)["protein_synthesis_per_min"]["gfp"])


@pytest.mark.usefixtures("state_backend")
@pytest.mark.parametrize("bad", [0, -1, 100.5, float("nan"), float("inf"), True, "50"])
def test_out_of_range_atp_changes_nothing(bad):
    vm = create_bio_vm("vm", "ecoli")
    vm.allocate(atp_percent=40)
    version = vm.record.version
    with pytest.raises(InputError, match="ATP allocation"):
        vm.allocate(atp_percent=bad)
    vm = load_bio_vm("vm")
    assert vm.record.allocations == {"atp_percent": 40}
    assert vm.record.version == version
    assert vm.get_biological_metrics()["atp_cap_percent"] == pytest.approx(40)


@pytest.mark.usefixtures("state_backend")
@pytest.mark.parametrize("bad", [0, -5, 2.5, True, 10**10])
def test_bad_ribosome_allocation_changes_nothing(bad):
    vm = create_bio_vm("vm", "ecoli")
    with pytest.raises(InputError, match="ribosome allocation"):
        vm.allocate(ribosomes=bad)
    assert load_bio_vm("vm").record.allocations == {}
    assert StateStore().budget()["ribosomes_allocated"] == 0


@pytest.mark.usefixtures("state_backend")
def test_hundred_threads_never_exceed_the_budget():
    store = StateStore()
    store.set_budget(ribosomes=7_000, atp_percent=450)
    for i in range(10):
        create_bio_vm(f"vm{i}", "syn3a")
    barrier = threading.Barrier(100)
    granted: list[tuple[str, int]] = []
    refused: list[int] = []

    def worker(n: int) -> None:
        vm = load_bio_vm(f"vm{n % 10}")
        barrier.wait()
        for _ in range(3):
            try:
                vm.allocate(ribosomes=700 + n, atp_percent=45 + n % 10)
                granted.append((vm.vm_id, n))
            except BudgetError:
                refused.append(n)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    budget = store.budget()
    assert budget["ribosomes_allocated"] <= 7_000
    assert budget["atp_percent_allocated"] <= 450
    assert granted and refused  # the budget was contended and did bind
    records = store.list_vms()
    assert sum(r.allocations.get("ribosomes", 0) for r in records) == (
        budget["ribosomes_allocated"])
    for record in records:  # the ledger and the cells' caps agree
        metrics = load_bio_vm(record.vm_id).get_biological_metrics()
        if "ribosomes" in record.allocations:
            assert metrics["ribosome_cap"] == record.allocations["ribosomes"]


@pytest.mark.usefixtures("state_backend")
def test_destroying_a_vm_frees_its_allocation():
    StateStore().set_budget(ribosomes=1_000)
    a = create_bio_vm("a", "syn3a", config={"resources": {"ribosomes": 1_000}})
    b = create_bio_vm("b", "syn3a")
    with pytest.raises(BudgetError, match="0 of 1000 available"):
        b.allocate(ribosomes=1)
    with pytest.raises(BudgetError):
        create_bio_vm("c", "syn3a", config={"resources": {"ribosomes": 1}})
    assert StateStore().find_vm("c") is None
    a.destroy()
    a.destroy()
    assert b.allocate(ribosomes=1_000) == {"ribosomes": 1_000}


def test_uncapped_constant_is_the_models_default():
    from bioxen_flows.engine import UNCAPPED_RIBOSOMES

    metrics = Cell("ecoli").metrics()
    assert metrics["ribosome_cap"] == UNCAPPED_RIBOSOMES
    assert metrics["atp_cap_percent"] == 100.0
