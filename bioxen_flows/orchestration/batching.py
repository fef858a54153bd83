"""The VMs of a comparison and how they are grouped into batch tasks: pure, no Prefect.

A `VMSpec` says what one VM is (its id, organism, role, package and config); the tasks
pass specs around, never VM objects. Batches hold VMs that can run one program (one role
and package), of one organism when sized, so a worker reuses the organism's compiled model;
the costliest start first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from bioxen_flows.model.builder import host_parameter
from bioxen_flows.orchestration.run_context import run_tag
from bioxen_flows.organisms.profiles import get_profile

# Batches per worker: more gives finer progress and load balance, fewer less task overhead.
BATCHES_PER_WORKER = 4
MAX_BATCH_SIZE = 100  # VMs in one batch task


@dataclass(frozen=True)
class VMSpec:
    """One VM to create, JSON-ready in its parts (what the tasks pass around).

    `role` is "cell", or "control": the same organism and caps without the package."""

    vm_id: str
    organism: str
    vm_type: str = "basic"
    replicate: int = 0
    role: str = "cell"
    package: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> int | None:
        """The stochastic seed of its cell (None: deterministic)."""
        return (self.config.get("simulation") or {}).get("seed")

    @property
    def stochastic(self) -> bool:
        return bool((self.config.get("simulation") or {}).get("stochastic"))

    def placed(self, placement: dict[str, str]) -> VMSpec:
        """This spec with the backend's placement (an XCP-ng guest's address) in its config."""
        return VMSpec(self.vm_id, self.organism, self.vm_type, self.replicate, self.role,
                      self.package, {**self.config, "placement": placement})


def vm_spec(
    vm_id: str,
    organism: str,
    *,
    vm_type: str = "basic",
    replicate: int = 0,
    role: str = "cell",
    package: str | None = None,
    atp_percent: float | None = None,
    ribosomes: int | None = None,
    seed: int | None = None,
    config: dict[str, Any] | None = None,
) -> VMSpec:
    """The spec of one VM: `config` with its resource caps and seed merged in."""
    config = dict(config or {})
    simulation = {"stochastic": True, "seed": seed} if seed is not None else {}
    resources = {
        k: v for k, v in (("atp_percent", atp_percent), ("ribosomes", ribosomes)) if v is not None
    }
    return VMSpec(vm_id, organism, vm_type, replicate, role, package, {
        **config,
        "resources": {**config.get("resources", {}), **resources},
        "simulation": {**config.get("simulation", {}), **simulation},
    })


def comparison_specs(
    organisms: list[str], replicates: int, run_id: str, *, vm_type: str = "basic",
    package: str | None = None, atp_percent: float | None = None,
    ribosomes: int | None = None, seed: int | None = None,
    config: dict[str, Any] | None = None,
) -> list[VMSpec]:
    """The VMs of the comparison run `run_id` (named by its `run_tag`): `replicates` cells
    per organism (stochastic with seed + r when `seed` is given) and, with a package,
    control cells without it (`control_count`; control r has seed + r)."""
    tag = run_tag(run_id)
    specs = []
    for organism in organisms:
        for rep in range(replicates):
            specs.append(vm_spec(
                f"cmp-{tag}-{organism}-{rep}", organism, vm_type=vm_type, replicate=rep,
                package=package, atp_percent=atp_percent, ribosomes=ribosomes,
                seed=None if seed is None else seed + rep, config=config,
            ))
        controls = control_count(replicates, stochastic=seed is not None) if package else 0
        for rep in range(controls):
            suffix = "" if controls == 1 else f"-{rep}"
            specs.append(vm_spec(
                f"cmp-{tag}-{organism}-control{suffix}", organism, vm_type=vm_type,
                role="control", replicate=rep, atp_percent=atp_percent, ribosomes=ribosomes,
                seed=None if seed is None else seed + rep, config=config,
            ))
    return specs


def control_count(replicates: int, stochastic: bool) -> int:
    """Control cells per organism: as many as cells when they are stochastic (the burden
    then has a 95 % interval; one stochastic control would be one noisy draw), one when
    deterministic (copies would be identical)."""
    return replicates if stochastic else 1


@dataclass(frozen=True)
class Batch:
    """VMs run by one task, and the label its task runs are named by."""

    specs: list[VMSpec]
    label: str


def batch_specs(specs: list[VMSpec], sizes: dict[str, int] | None) -> list[list[VMSpec]]:
    """Batches of one role and package each, so one program fits the batch. With `sizes`,
    also of one organism (a worker reuses the organism's compiled model), `sizes[organism]`
    VMs each; without, one batch per role (six task runs however many organisms)."""
    groups: dict[tuple[str, str], list[VMSpec]] = {}
    for spec in specs:
        groups.setdefault((spec.organism if sizes else "", spec.role), []).append(spec)
    batches = []
    for group in groups.values():
        it = iter(group)
        size = sizes[group[0].organism] if sizes else len(group)
        while chunk := list(islice(it, size)):
            batches.append(chunk)
    return batches


def label_batches(batches: list[list[VMSpec]]) -> list[Batch]:
    """Each batch with a label for its task runs: organism(s), role, batch number
    (`syn3a-batch1`, `ecoli-control-batch1`, `ecoli-syn3a-batch1`)."""
    counts: dict[tuple[str, str], int] = {}
    out = []
    for specs in batches:
        organisms = "-".join(sorted({s.organism for s in specs}))
        key = (organisms, specs[0].role)
        counts[key] = counts.get(key, 0) + 1
        role = "" if key[1] == "cell" else f"-{key[1]}"
        out.append(Batch(specs, f"{organisms}{role}-batch{counts[key]}"))
    return out


def batch_program(batch: list[VMSpec], hours: float) -> str:
    """The process program of a batch (one package per batch; json.dumps escapes the
    package name as a literal): install it, then grow for `hours`."""
    package = batch[0].package
    lines = [f"install({json.dumps(package)})"] if package else []
    return "\n".join([*lines, f"grow(minutes={hours * 60!r})"])


def simulation_work(organism: str) -> float:
    """Relative cost of simulating a cell of `organism`, for ordering batches: a Gillespie
    run's events scale with the amino acids the cell polymerizes per minute, mass x growth
    rate (~8x more in E. coli than in Syn3A; bench/engine.py measures ~5x the CPU time)."""
    profile = get_profile(organism)
    return profile.parameters.get("M", host_parameter("M")) / profile.doubling_time_target_min


def largest_first(batches: Sequence[Sequence[str]]) -> list[int]:
    """The indexes of `batches` (each the organisms of its cells), costliest first (ties
    keep their order)."""
    return sorted(range(len(batches)),
                  key=lambda i: -sum(simulation_work(o) for o in batches[i]))


def auto_batch_sizes(
    organisms: Iterable[str], workers: int, stochastic: bool = False
) -> dict[str, int]:
    """VMs per batch for each organism, given the organism of each cell to run: batches of
    about equal work, about `BATCHES_PER_WORKER` per worker, 1 to `MAX_BATCH_SIZE` VMs
    each. A stochastic cell's work is its organism's `simulation_work` (an E. coli cell
    costs several Syn3A cells), an ODE cell's the same in every organism. Equal batches let
    the workers finish together with few task runs: each costs ~60 ms of a worker and of
    the server, a stochastic cell seconds."""
    cells = list(organisms)
    weight = {o: simulation_work(o) if stochastic else 1.0 for o in set(cells)}
    target = sum(weight[o] for o in cells) / (workers * BATCHES_PER_WORKER)
    return {o: max(1, min(MAX_BATCH_SIZE, int(target // w))) for o, w in weight.items()}
