"""One simulated cell: the organism's model, its installed packages, caps and clock.

Every number a bio-VM reports is read from this cell's libroadrunner simulation.
Amounts are molecules per cell, times are minutes.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from bioxen_flows.model.builder import build_model_text, load_roadrunner
from bioxen_flows.model.packages import Package, check_gene_id, resolve_package, user_module
from bioxen_flows.organisms.profiles import OrganismProfile, get_profile

# Model symbol → column name in time series (units: molecules per cell unless named).
SERIES_COLUMNS: dict[str, str] = {
    "time": "time_min",
    "lam": "growth_rate_per_min",
    "elong": "elongation_rate_aa_per_min",
    "atp_percent": "atp_percent",
    "a": "energy_molecules",
    "ribosomes_total": "ribosomes_total",
    "r": "ribosomes_free",
    "translating": "ribosomes_translating",
    "e_t": "transporters",
    "e_m": "enzymes",
    "q": "housekeeping",
}
BALANCED_GROWTH_MIN = 1e5  # simulated minutes that bring any profile to balanced growth
MAX_POINTS = 100_001


@dataclass(frozen=True)
class Trajectory:
    """A simulated time series; `to_records()` feeds `pandas.DataFrame` directly."""

    columns: tuple[str, ...]
    values: np.ndarray

    def to_records(self) -> list[dict[str, float]]:
        columns = self.columns  # one array: every row has len(columns) values
        return [dict(zip(columns, row)) for row in self.values.tolist()]  # noqa: B905

    def to_frame(self):  # -> pandas.DataFrame (pandas imported only when asked)
        import pandas as pd

        return pd.DataFrame(self.values, columns=list(self.columns))

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.columns.index(name)]


class Cell:
    """A cell of one organism, simulated deterministically (CVODE) or with Gillespie SSA."""

    def __init__(
        self,
        biological_type: str | OrganismProfile,
        *,
        stochastic: bool = False,
        seed: int | None = None,
    ) -> None:
        self.profile = (
            biological_type
            if isinstance(biological_type, OrganismProfile)
            else get_profile(biological_type)
        )
        if stochastic and seed is None:
            raise ValueError("stochastic mode needs a seed, so that runs are reproducible")
        self.stochastic = stochastic
        self.seed = seed
        self.packages: list[Package] = []
        self.time = 0.0
        # Parameters changed at run time (caps, nutrient, switches): re-applied on rebuild.
        self.settings: dict[str, float] = {}
        self._rr: Any = None
        self._build(balanced_growth_state(self.profile.biological_type))

    # ---- model construction ---------------------------------------------------------
    def model_text(self) -> str:
        return build_model_text(self.profile.parameters, self.packages, self.stochastic)

    def _build(self, amounts: dict[str, float]) -> None:
        """Compile the current model and load amounts (missing species start at 0)."""
        rr = load_roadrunner(self.model_text())
        species = set(rr.model.getFloatingSpeciesIds())
        for name, value in amounts.items():
            if name in species:
                rr.setValue(name, float(round(value)) if self.stochastic else value)
        for name, value in self.settings.items():
            rr.setValue(name, value)
        if self.stochastic:
            rr.integrator = "gillespie"
            rr.integrator.seed = self.seed
            rr.integrator.variable_step_size = False
        self._rr = rr
        self._selections = self._make_selections()

    def _species_amounts(self) -> dict[str, float]:
        if self._rr is None:
            return {}
        ids = self._rr.model.getFloatingSpeciesIds()
        return dict(zip(ids, map(float, self._rr.model.getFloatingSpeciesAmounts()), strict=True))

    def _make_selections(self) -> list[str]:
        selections = [s for s in SERIES_COLUMNS if s in self._symbols()]
        for gene in self.genes:
            selections += [f"p_{gene}", f"m_{gene}"]
        return selections

    def _symbols(self) -> set[str]:
        model = self._rr.model
        return (
            {"time"}
            | set(model.getFloatingSpeciesIds())
            | set(model.getGlobalParameterIds())
        )

    # ---- simulation -----------------------------------------------------------------
    def grow(self, minutes: float, points: int | None = None) -> Trajectory:
        """Advance the simulated clock by `minutes`; one sample per minute by default."""
        if not (isinstance(minutes, (int, float)) and 0 < minutes <= 1e6):
            raise ValueError(f"minutes must be > 0 and <= 1e6, got {minutes!r}")
        n = points if points is not None else int(min(math.ceil(minutes), MAX_POINTS - 1)) + 1
        if not 2 <= n <= MAX_POINTS:
            raise ValueError(f"points must be between 2 and {MAX_POINTS}, got {n}")
        start = self.time
        if self.stochastic:
            # The random stream is a function of (seed, clock): a cell restored from a
            # snapshot, here or in another process, replays exactly the same trajectory.
            self._rr.integrator.seed = zlib.crc32(f"{self.seed}:{start!r}".encode())
        values = self._rr.simulate(start, start + minutes, n, selections=self._selections)
        self.time = start + minutes
        names = [SERIES_COLUMNS.get(s) or _gene_column(s) for s in self._selections]
        return Trajectory(tuple(names), np.asarray(values))

    # ---- genetic programs -----------------------------------------------------------
    @property
    def genes(self) -> list[str]:
        return [g.gene_id for p in self.packages for g in p.genes]

    @property
    def operons(self) -> list[str]:
        return [o for p in self.packages for o in p.operons]

    def install(self, package: str | Package, copies: int | None = None) -> Package:
        """Add a package's genes to the model; the cell keeps its state and clock."""
        pkg = package if isinstance(package, Package) else resolve_package(package, copies)
        if copies is not None and isinstance(package, Package):
            pkg = pkg.with_copies(copies)
        installed = set(self.genes)
        for gene in pkg.genes:
            check_gene_id(gene.gene_id, source=pkg.name)
            if gene.gene_id in installed:
                raise ValueError(
                    f"gene {gene.gene_id!r} of package {pkg.name!r} is already installed; "
                    "to express more of it, install with more copies instead"
                )
        amounts = self._species_amounts()
        self.packages.append(pkg)
        try:
            self._build(amounts)
        except ValueError:
            self.packages.pop()
            raise
        return pkg

    def set_transcription(self, genes: list[str], on: bool) -> None:
        for gene in genes:
            self._require(gene, self.genes, "installed gene")
        for gene in genes:
            self._set(f"on_{gene}", 1.0 if on else 0.0)

    def set_operons(self, operons: list[str], induced: bool) -> None:
        for operon in operons:
            self._require(operon, self.operons, "installed operon")
        for operon in operons:
            self._set(f"induced_{operon}", 1.0 if induced else 0.0)

    def set_nutrient(self, level: float) -> None:
        """External nutrient s0, molecules per cell (the paper's E. coli medium is 1e4)."""
        if not 0 <= level <= 1e9:
            raise ValueError(f"nutrient level must be between 0 and 1e9, got {level}")
        self._set("s0", float(level))

    def set_caps(self, atp_percent: float | None = None, ribosomes: float | None = None) -> None:
        """Resource caps: energy supply as % of the organism's maximum, ribosome ceiling."""
        if atp_percent is not None:
            self._set("atp_scale", atp_percent / 100.0)
        if ribosomes is not None:
            self._set("ribosome_cap", float(ribosomes))

    def _set(self, name: str, value: float) -> None:
        self.settings[name] = value
        self._rr.setValue(name, value)

    @staticmethod
    def _require(item: str, available: list[str], what: str) -> None:
        if item not in available:
            choices = ", ".join(available) or "none (install a package first)"
            raise ValueError(f"unknown {what} {item!r}; available: {choices}")

    # ---- read-outs ------------------------------------------------------------------
    def value(self, symbol: str) -> float:
        return float(self._rr.getValue(symbol))

    def metrics(self) -> dict[str, Any]:
        """The cell's current state, every figure from the model (units in the names)."""
        lam = self.value("lam")
        total = self.value("ribosomes_total")
        translating = self.value("translating")
        elong = self.value("elong")
        gene_rates = {
            g: elong * self.value(f"c_{g}") / self.value(f"n_{g}") for g in self.genes
        }
        plasmid_genes = {g.gene_id for p in self.packages if p.plasmid for g in p.genes}
        return {
            "biological_type": self.profile.biological_type,
            "simulated_time_min": self.time,
            "mode": "stochastic" if self.stochastic else "ode",
            "growth_rate_per_min": lam,
            "doubling_time_min": math.log(2) / lam if lam > 0 else math.inf,
            "ribosomes_total": total,
            "ribosomes_free": self.value("r"),
            "ribosomes_translating": translating,
            "ribosome_utilization_percent": 100.0 * translating / total if total > 0 else 0.0,
            "atp_percent": self.value("atp_percent"),
            "elongation_rate_aa_per_min": elong,
            "nutrient_molecules": self.value("s0"),
            "atp_cap_percent": 100.0 * self.value("atp_scale"),
            "ribosome_cap": self.value("ribosome_cap"),
            "installed_packages": [p.name for p in self.packages],
            "protein_molecules": {g: self.value(f"p_{g}") for g in self.genes},
            "protein_synthesis_per_min": gene_rates,
            "translating_ribosomes_per_gene": {g: self.value(f"c_{g}") for g in self.genes},
            "transcription_on": {g: self.value(f"on_{g}") > 0 for g in self.genes},
            "operon_states": {
                o: "induced" if self.value(f"induced_{o}") > 0 else "repressed"
                for o in self.operons
            },
            "plasmid_count": sum(p.copies for p in self.packages if p.plasmid),
            "plasmid_copies": {g: self.value(f"copies_{g}") for g in sorted(plasmid_genes)},
        }

    # ---- snapshots ------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything needed to continue this cell elsewhere, as JSON-ready data."""
        return {
            "biological_type": self.profile.biological_type,
            "stochastic": self.stochastic,
            "seed": self.seed,
            "time": self.time,
            "packages": [_package_entry(p) for p in self.packages],
            "settings": dict(self.settings),
            "species": self._species_amounts(),
        }

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> Cell:
        cell = cls.__new__(cls)
        cell.profile = get_profile(snap["biological_type"])
        cell.stochastic = bool(snap["stochastic"])
        cell.seed = snap["seed"]
        cell.packages = [_package_from_entry(p) for p in snap["packages"]]
        cell.time = float(snap["time"])
        cell.settings = {k: float(v) for k, v in snap["settings"].items()}
        cell._build(snap["species"])
        cell.restore(snap)
        return cell

    def restore(self, snap: dict[str, Any]) -> None:
        """Return to a snapshot of this cell: packages, clock, settings, every species amount."""
        if snap["biological_type"] != self.profile.biological_type:
            raise ValueError("snapshot is of a different organism")
        self.time = float(snap["time"])
        self.settings = {k: float(v) for k, v in snap["settings"].items()}
        if snap["packages"] != self.snapshot()["packages"]:
            self.packages = [_package_from_entry(p) for p in snap["packages"]]
            self._build(snap["species"])
        else:
            for name, value in {**self.settings, **snap["species"]}.items():
                self._rr.setValue(name, float(value))


def _package_entry(package: Package) -> dict[str, Any]:
    """A package as a snapshot holds it: built-ins by name, user modules by content."""
    entry: dict[str, Any] = {"name": package.name, "copies": package.copies}
    if package.source != "built-in":
        entry["module"] = {
            "antimony": package.antimony, "sha256": package.sha256, "origin": package.source,
        }
    return entry


def _package_from_entry(entry: dict[str, Any]) -> Package:
    module = entry.get("module")
    if module is None:  # a built-in (or, from before content addressing, a module's path)
        return resolve_package(entry["name"], entry["copies"])
    package = user_module(entry["name"], module["antimony"], source=module["origin"])
    if package.sha256 != module["sha256"]:
        raise ValueError(f"stored module {entry['name']!r} does not match its hash")
    return package.with_copies(entry["copies"])


_WARM_MODELS: dict[str, Any] = {}


@cache
def balanced_growth_state(biological_type: str) -> dict[str, float]:
    """Species amounts of an uncapped cell in balanced growth (ODE), where VMs start."""
    rr = load_roadrunner(build_model_text(get_profile(biological_type).parameters))
    rr.simulate(0, BALANCED_GROWTH_MIN, 2)
    # libroadrunner reuses a compiled model only while an instance of it is alive: keeping
    # this one makes every later cell of the organism build in ~4 ms instead of ~110 ms.
    _WARM_MODELS[biological_type] = rr
    ids = rr.model.getFloatingSpeciesIds()
    return dict(zip(ids, map(float, rr.model.getFloatingSpeciesAmounts()), strict=True))


def _gene_column(selection: str) -> str:
    kind, _, gene = selection.partition("_")
    return f"{'protein' if kind == 'p' else 'mrna'}_{gene}"
