"""One simulated cell: the organism's model, its installed packages, caps and clock.

Every number a bio-VM reports is read from this cell's libroadrunner simulation.
Amounts are molecules per cell, times are minutes.
"""

from __future__ import annotations

import math
import re
import time as clock
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bioxen_flows import progress
from bioxen_flows.engine import STOCHASTIC_ENGINES, UNCAPPED_RIBOSOMES, cap_settings, ssa
from bioxen_flows.errors import InputError
from bioxen_flows.limits import MAX_COPIES, MAX_NUTRIENT, MAX_SEED, MAX_STRENGTH, MIN_COPIES
from bioxen_flows.model.builder import MAX_N, build_model_text, package_parameters
from bioxen_flows.model.guest import Package, check_gene_id
from bioxen_flows.model.loader import (
    BALANCED_GROWTH_MIN,
    antimony_to_sbml,
    balanced_growth_state,
    load_roadrunner,
)
from bioxen_flows.model.modules import MAX_AMOUNT, MAX_CLOCK_MIN, MAX_GROW_MIN
from bioxen_flows.model.packages import check_module_symbols, resolve_package, user_module
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
MAX_POINTS = 100_001
# Below a billionth of a molecule per cell an ODE amount is integration noise (a starved
# cell's energy reached -2e-61 and 8e-73): it is set to 0, so the cell can be fed again
# (CVODE failed to restart from such values) and no snapshot holds a negative amount.
NEGLIGIBLE_AMOUNT = 1e-9
# Growth below this counts as none (a doubling time over 1,300 years): a starved cell
# reports growth 0 and no doubling time, not -4.8e-108 and a 75-digit number.
NO_GROWTH_PER_MIN = 1e-9
# Stochastic cost bounds. An exact SSA pays per reaction event: ~3e5 events per CPU second
# here (E. coli: 25,000 events per simulated minute, grow(1440) ~110 s). A grow whose
# events, estimated from the current propensities, exceed MAX_STOCHASTIC_EVENTS (~5 CPU
# minutes) is refused before it starts; one estimated above CHUNKED_ABOVE_EVENTS runs in
# STOCHASTIC_CHUNKS pieces and is abandoned, state unchanged, past STOCHASTIC_WALL_S
# (propensities can rise as it runs: a plasmid at 1,000 copies took 16 s per minute).
MAX_STOCHASTIC_EVENTS = 1e8
CHUNKED_ABOVE_EVENTS = 1e6
STOCHASTIC_CHUNKS = 20
STOCHASTIC_WALL_S = 600.0
MAX_STORED_MODULE_CHARS = 2 * 1024 * 1024  # a user module kept in a snapshot (Antimony text)
# Run-time settings a snapshot may carry (caps, nutrient, gene and operon switches).
_SETTING = re.compile(r"atp_scale|ribosome_cap|s0|(?:on|induced)_[A-Za-z][A-Za-z0-9_]{0,63}")


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


# Protein mass of one molecule (aa), by species: what a dividing cell's size follows.
_RIBOSOME_SPECIES = re.compile(r"r|c_[A-Za-z0-9_]+")
_HOST_PROTEINS = ("e_t", "e_m", "q")


class Cell:
    """A cell of one organism, simulated deterministically (CVODE) or stochastically.

    Stochastic cells run on the compiled exact engine (`engine/ssa.py`) and grow and divide
    (`division`, default on); ``stochastic_engine="roadrunner"`` runs libroadrunner's
    Gillespie instead, the reference, on a cell of fixed size."""

    def __init__(
        self,
        biological_type: str | OrganismProfile,
        *,
        stochastic: bool = False,
        seed: int | None = None,
        stochastic_engine: str = "compiled",
        division: bool | None = None,
        burn_in: bool | None = None,
    ) -> None:
        self.profile = (
            biological_type
            if isinstance(biological_type, OrganismProfile)
            else get_profile(biological_type)
        )
        if stochastic and seed is None:
            raise InputError("stochastic mode needs a seed, so that runs are reproducible")
        _check_seed(seed)
        self.stochastic = stochastic
        self.seed = seed
        self.engine, self.division = _engine_choice(stochastic, stochastic_engine, division)
        # burned in: done, or never to be done (deterministic, the roadrunner reference, or
        # burn_in=False); else it runs before the first grow, on the cell as set up then
        want_burn_in = self.engine == "compiled" if burn_in is None else bool(burn_in)
        self.burned_in = not (stochastic and want_burn_in)
        self.lineage: ssa.Lineage | None = None
        self.division_times: list[float] = []
        self.packages: list[Package] = []
        self.time = 0.0
        # Parameters changed at run time (caps, nutrient, switches): re-applied on rebuild.
        self.settings: dict[str, float] = {}
        self._rr: Any = None
        self._build(balanced_growth_state(self.profile.biological_type))
        if self.division:
            self.lineage = self._new_lineage()

    # ---- model construction ---------------------------------------------------------
    def model_text(self) -> str:
        return build_model_text(self.profile.parameters, self.packages, self.stochastic)

    def _build(self, amounts: dict[str, float]) -> None:
        """Compile the current model and load amounts (missing species start at 0)."""
        text = self.model_text()
        rr = load_roadrunner(text)
        species = set(rr.model.getFloatingSpeciesIds())
        for name, value in amounts.items():
            if name in species:
                value = 0.0 if value < NEGLIGIBLE_AMOUNT else value
                rr.setValue(name, float(round(value)) if self.stochastic else value)
        for name, value in {**package_parameters(self.packages), **self.settings}.items():
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

    def _defined_symbols(self) -> set[str]:
        """Every id the cell's current model defines (host, organism and installed packages)."""
        model = self._rr.model
        return (
            self._symbols()
            | set(model.getBoundarySpeciesIds())
            | set(model.getCompartmentIds())
            | set(model.getReactionIds())
        )

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
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not (
            0 < minutes <= MAX_GROW_MIN
        ):
            shown = minutes if not isinstance(minutes, int) or minutes < 1e20 else "a huge integer"
            raise InputError(f"minutes must be > 0 and <= {_power(MAX_GROW_MIN)}, got {shown!r}")
        minutes = float(minutes)
        n = points if points is not None else int(min(math.ceil(minutes), MAX_POINTS - 1)) + 1
        if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= MAX_POINTS:
            raise InputError(f"points must be an integer between 2 and {MAX_POINTS}, got {n!r}")
        start = self.time
        if not start + minutes / (n - 1) > start:
            raise InputError(
                f"grow({minutes!r}) is too short to move the clock at {start:g} min "
                "(each time step must change it); grow for longer"
            )
        if self.stochastic:
            # The random stream is a function of (seed, clock): a cell restored from a
            # snapshot, here or in another process, replays exactly the same trajectory.
            self._rr.integrator.seed = zlib.crc32(f"{self.seed}:{start!r}".encode())
        if self.stochastic:
            self._refuse_costly(minutes)
        if self.stochastic and self.engine == "compiled":
            values = self._simulate_compiled(start, minutes, n)
        elif self.stochastic:
            values = self._simulate_stochastic(start, minutes, n)
        else:
            values = self._rr.simulate(start, start + minutes, n, selections=self._selections)
        self.time = start + minutes
        self._grown().update(minutes, final=True)
        self._zero_negligible_amounts()
        names = [SERIES_COLUMNS.get(s) or _gene_column(s) for s in self._selections]
        if self.stochastic and self.engine == "compiled":
            names += ["cell_size", "generation"]
        return Trajectory(tuple(names), np.asarray(values))

    def _grown(self) -> progress.Reporter:
        """This cell's progress reporter (simulated minutes grown, for the CLI's bar)."""
        reporter = self.__dict__.get("_progress_reporter")
        if reporter is None:
            reporter = self.__dict__["_progress_reporter"] = progress.Reporter()
        return reporter

    def _kernel(self) -> ssa.Kernel:
        """The compiled engine's kernel of this cell's model; a model it cannot run is a
        one-line `InputError` (run it on ``stochastic_engine="roadrunner"``)."""
        text = self.model_text()
        try:
            return ssa.kernel_for_model(text, lambda: antimony_to_sbml(text))
        except ssa.Unsupported as why:
            raise InputError(
                f"the compiled stochastic engine cannot run this cell's model: {why}; use "
                "the roadrunner engine (--stochastic-engine roadrunner --no-division)"
            ) from None

    def _simulate_compiled(self, start: float, minutes: float, n: int) -> np.ndarray:
        """`grow` on the compiled exact engine: samples of the selections (then cell size
        and generation); the cell's amounts and lineage move to the end, or, when the run
        breaks a bound, stay as they were (one `InputError`)."""
        kernel = self._kernel()
        if self.division and self.lineage is None:
            self.lineage = self._new_lineage()
        if self.burned_in:
            return self._run_compiled(kernel, start, minutes, n)
        before = self.snapshot()
        try:  # the first grow burns the cell in; a grow that fails changes nothing
            self._burn_in(kernel, start)
            return self._run_compiled(kernel, start, minutes, n)
        except BaseException:
            self.restore(before)
            raise

    def _run_compiled(self, kernel: ssa.Kernel, start: float, minutes: float,
                      n: int) -> np.ndarray:
        rr = self._rr
        amounts = np.array([rr.getValue(name) for name in kernel.species], dtype=np.float64)
        parameters = np.array([rr.getValue(name) for name in kernel.parameters],
                              dtype=np.float64)
        times = np.linspace(start, start + minutes, n)
        lineage = ssa.Lineage(**vars(self.lineage)) if self.lineage else None
        deadline = clock.monotonic() + STOCHASTIC_WALL_S

        grown = self._grown()

        def within_bounds(t: float, events: int) -> None:
            grown.update(t - start)
            if clock.monotonic() > deadline:
                raise InputError(
                    f"grow({minutes:g}) was abandoned after {STOCHASTIC_WALL_S:g} s, the wall-"
                    f"time bound of a stochastic run, at {t - start:g} of {minutes:g} min "
                    f"({events:.3g} events); the cell is as it was: grow for less at a time"
                )

        result = ssa.run_kernel(
            kernel, amounts, parameters, times,
            seed=zlib.crc32(f"{self.seed}:{start!r}".encode()),
            max_events=int(MAX_STOCHASTIC_EVENTS), division=self._division_rule(kernel),
            lineage=lineage, check=within_bounds,
        )
        for name, value in zip(kernel.species, amounts, strict=True):
            rr.setValue(name, float(value))
        self.lineage = lineage
        if lineage is not None:
            kept = self.division_times + result.division_times
            self.division_times = kept[-MAX_KEPT_DIVISIONS:]
        rules = ssa.observe(kernel, result.states, parameters, times)
        species = {name: i for i, name in enumerate(kernel.species)}
        rule_index = {name: i for i, name in enumerate(kernel.rules)}
        columns = []
        for name in self._selections:
            if name == "time":
                columns.append(times)
            elif name in species:
                columns.append(result.states[:, species[name]])
            elif name in rule_index:
                column = rules[:, rule_index[name]]
                columns.append(column / result.sizes if name == "lam" else column)
            else:  # a parameter (a switch, a cap): constant over the run
                columns.append(np.full(n, rr.getValue(name)))
        columns += [result.sizes, result.generations]
        return np.column_stack(columns)

    def _burn_in(self, kernel: ssa.Kernel, start: float) -> None:
        """Bring the cell, as set up for its first grow (packages, caps, switches), to a
        state drawn from its stationary distribution: its model's balanced growth, then
        `BURN_IN_GENERATIONS` generations and a random fraction of one of its own seeded
        stream, the clock left where it is. Replicates then differ from t = 0, as cells of
        a population do, and their variance does not build up over the run as
        1 - exp(-2*lambda*t) from a shared start."""
        self._relax_deterministically()
        lam = self.value("lam") / self.cell_size
        if lam >= NO_GROWTH_PER_MIN:  # a cell that does not grow has no generations
            # plus a random fraction of a generation: replicates start at random phases of
            # their cycles, not all just after a division
            phase = np.random.default_rng(zlib.crc32(f"{self.seed}:phase".encode())).random()
            generations = BURN_IN_GENERATIONS + phase
            minutes = min(BURN_IN_MAX_MIN, generations * math.log(2) / lam)
            amounts = np.array([self._rr.getValue(n) for n in kernel.species])
            parameters = np.array([self._rr.getValue(n) for n in kernel.parameters])
            lineage = ssa.Lineage(**vars(self.lineage)) if self.lineage else None
            ssa.run_kernel(
                kernel, amounts, parameters, np.array([start, start + minutes]),
                seed=zlib.crc32(f"{self.seed}:burn-in".encode()),
                max_events=int(MAX_STOCHASTIC_EVENTS), division=self._division_rule(kernel),
                lineage=lineage, check=None,
            )
            for name, value in zip(kernel.species, amounts, strict=True):
                self._rr.setValue(name, float(value))
            if lineage is not None:  # its age carries over; its history starts now
                self.lineage = ssa.Lineage(lineage.birth_mass, 0,
                                           max(0.0, lineage.birth_time - minutes), 0)
        self.burned_in = True

    def _relax_deterministically(self) -> None:
        """Move the cell to the balanced growth of its model as set up (packages, caps,
        switches), deterministically: a package installed into a cell in balanced growth
        takes several generations to settle, longer than the stochastic burn-in."""
        try:
            rr = load_roadrunner(build_model_text(self.profile.parameters, self.packages))
            species = set(rr.model.getFloatingSpeciesIds())
            for name, value in {**package_parameters(self.packages), **self.settings,
                                **self._species_amounts()}.items():
                if name in species or name not in self._species_amounts():
                    rr.setValue(name, value)
            rr.simulate(0, BALANCED_GROWTH_MIN, 2)
        except RuntimeError:  # a module CVODE cannot integrate: burn in from where it is
            return
        own = set(self._rr.model.getFloatingSpeciesIds())  # the energy pools are rules here
        for name, value in zip(rr.model.getFloatingSpeciesIds(),
                               rr.model.getFloatingSpeciesAmounts(), strict=True):
            if name in own:
                self._rr.setValue(name, float(round(max(0.0, value))))

    def _new_lineage(self) -> ssa.Lineage:
        """A cell of the model's average mass M, born at ln2*M (its adder's birth mass)."""
        return ssa.Lineage(birth_mass=self._mass() * self.profile.division_added_mass,
                           birth_time=self.time)

    def _division_rule(self, kernel: ssa.Kernel) -> ssa.Division | None:
        if not self.division:
            return None
        mass_ref = self.value("M")
        return ssa.Division(
            weights=np.array([self._protein_mass(name) for name in kernel.species]),
            mass_ref=mass_ref, added_mass=self.profile.division_added_mass * mass_ref,
        )

    def _protein_mass(self, species: str) -> float:
        """aa per molecule: a ribosome (free or translating) n_r, a host protein n_x, a guest
        protein its gene's length (clamped as the model clamps it); mRNA and others 0."""
        if _RIBOSOME_SPECIES.fullmatch(species):
            return self.value("n_r")
        if species in _HOST_PROTEINS:
            return self.value("n_x")
        if species.startswith("p_") and species[2:] in self.genes:
            return float(min(MAX_N, max(1.0, self.value(f"n_{species[2:]}"))))
        return 0.0

    def _mass(self) -> float:
        """The cell's protein mass, aa (the model's M in balanced growth)."""
        return sum(self._protein_mass(name) * amount
                   for name, amount in self._species_amounts().items())

    @property
    def cell_size(self) -> float:
        """Size relative to the model's average cell (mass / M); 1 for a cell of fixed size."""
        return self._mass() / self.value("M") if self.division else 1.0

    def _refuse_costly(self, minutes: float) -> None:
        """Refuse, before it starts, a grow whose events, estimated from the current
        propensities, pass `MAX_STOCHASTIC_EVENTS`."""
        estimate = float(np.abs(self._rr.getReactionRates()).sum()) * minutes
        if estimate > MAX_STOCHASTIC_EVENTS:
            raise InputError(
                f"grow({minutes:g}) would take about {estimate:.2g} stochastic events (the "
                f"limit is {MAX_STOCHASTIC_EVENTS:.0e}, seconds to minutes of CPU): grow for "
                "less at a time, or use the deterministic mode"
            )

    def _simulate_stochastic(self, start: float, minutes: float, n: int) -> Any:
        """The SSA run of `grow`, within the cost bounds above (refused or abandoned with
        one `InputError`; an abandoned run leaves the cell as it was)."""
        estimate = float(np.abs(self._rr.getReactionRates()).sum()) * minutes
        if estimate <= CHUNKED_ABOVE_EVENTS:
            return self._rr.simulate(start, start + minutes, n, selections=self._selections)
        before = self.snapshot()
        deadline = clock.monotonic() + STOCHASTIC_WALL_S
        times = np.linspace(start, start + minutes, n)
        chunks = range(STOCHASTIC_CHUNKS + 1)
        edges = sorted({round(k * (n - 1) / STOCHASTIC_CHUNKS) for k in chunks})
        parts = []
        for first, last in zip(edges[:-1], edges[1:], strict=True):
            part = np.asarray(self._rr.simulate(times[first], times[last], last - first + 1,
                                                selections=self._selections))
            parts.append(part if not parts else part[1:])
            self._grown().update(times[last] - start)
            if clock.monotonic() > deadline and last < n - 1:
                self.restore(before)
                raise InputError(
                    f"grow({minutes:g}) was abandoned after {STOCHASTIC_WALL_S:g} s, the wall-"
                    f"time bound of a stochastic run, at {times[last] - start:g} of "
                    f"{minutes:g} min; the cell is as it was: grow for less at a time"
                )
        return np.vstack(parts)

    def _zero_negligible_amounts(self) -> None:
        """Set amounts below `NEGLIGIBLE_AMOUNT` (integration noise, negatives included) to 0."""
        model = self._rr.model
        for name, value in zip(model.getFloatingSpeciesIds(),
                               model.getFloatingSpeciesAmounts(), strict=True):
            if value < NEGLIGIBLE_AMOUNT and value != 0.0:
                self._rr.setValue(name, 0.0)

    # ---- genetic programs -----------------------------------------------------------
    @property
    def genes(self) -> list[str]:
        return [g.gene_id for p in self.packages for g in p.genes]

    @property
    def operons(self) -> list[str]:
        return [o for p in self.packages for o in p.operons]

    def install(
        self, package: str | Package, copies: int | None = None, strength: float | None = None
    ) -> Package:
        """Add a package's genes to the model; the cell keeps its state and clock.

        `strength` multiplies the package's transcription rates (promoter strength)."""
        pkg = package if isinstance(package, Package) else resolve_package(package, copies)
        if copies is not None and isinstance(package, Package):
            pkg = pkg.with_copies(copies)
        if strength is not None:
            pkg = pkg.with_strength(strength)
        installed = set(self.genes)
        for gene in pkg.genes:
            check_gene_id(gene.gene_id, source=pkg.name)
            if gene.gene_id in installed:
                raise InputError(
                    f"gene {gene.gene_id!r} of package {pkg.name!r} is already installed; "
                    "to express more of it, install with more copies instead"
                )
        if pkg.defines:  # a user module: may it define these symbols next to what is installed?
            check_module_symbols(pkg, self._defined_symbols())
        amounts = self._species_amounts()
        self.packages.append(pkg)
        try:
            self._build(amounts)
        except BaseException:  # all or nothing: the cell keeps its old model
            self.packages.pop()
            self._build(amounts)
            raise
        return pkg

    def tune_package(self, name: str, copies: int | None = None,
                     strength: float | None = None) -> Package:
        """Change an installed package's copies or promoter strength: model parameters, so
        the cell keeps its model, state and clock (what a sweep varies between points)."""
        index = next((i for i, p in enumerate(self.packages) if p.name == name), None)
        if index is None:
            self._require(name, [p.name for p in self.packages], "installed package")
        assert index is not None
        package = self.packages[index]
        package = package if copies is None else package.with_copies(copies)
        package = package if strength is None else package.with_strength(strength)
        self.packages[index] = package
        for symbol, value in package_parameters([package]).items():
            self._rr.setValue(symbol, value)
        return package

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
        if not 0 <= level <= MAX_NUTRIENT:
            raise InputError(
                f"nutrient level must be between 0 and {_power(MAX_NUTRIENT)}, got {level}")
        self._set("s0", float(level))

    def set_caps(self, atp_percent: float | None = None, ribosomes: float | None = None) -> None:
        """Resource caps: energy supply as % of the organism's maximum, ribosome ceiling."""
        for name, value in cap_settings(atp_percent, ribosomes).items():
            self._set(name, value)

    def _set(self, name: str, value: float) -> None:
        self.settings[name] = value
        self._rr.setValue(name, value)

    @staticmethod
    def _require(item: str, available: list[str], what: str) -> None:
        if item not in available:
            choices = ", ".join(available) or "none (install a package first)"
            raise InputError(f"unknown {what} {item!r}; available: {choices}")

    # ---- read-outs ------------------------------------------------------------------
    def value(self, symbol: str) -> float:
        return float(self._rr.getValue(symbol))

    def metrics(self) -> dict[str, Any]:
        """The cell's current state, every figure from the model (units in the names)."""
        lam = self.value("lam") / self.cell_size  # a dividing cell's own growth rate
        lam = lam if lam >= NO_GROWTH_PER_MIN else 0.0
        total = self.value("ribosomes_total")
        translating = self.value("translating")
        elong = self.value("elong")
        gene_rates = {
            # a module's n_G is clamped to >= 1 where the model uses it (model/builder.py)
            g: elong * self.value(f"c_{g}") / max(1.0, self.value(f"n_{g}")) for g in self.genes
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
            "atp_percent": max(0.0, self.value("atp_percent")),
            "elongation_rate_aa_per_min": max(0.0, elong),
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
            "stochastic_engine": self.engine,
            "division": self.division,
            **self._lineage_metrics(),
        }

    def _lineage_metrics(self) -> dict[str, Any]:
        if self.lineage is None:
            return {}
        times = self.division_times
        gaps = np.diff(times) if len(times) > 1 else np.array([])
        return {
            "cell_size": self.cell_size,
            "generation": self.lineage.generation,
            "divisions": self.lineage.divisions,
            "birth_time_min": self.lineage.birth_time,
            "division_times_min": list(times[-20:]),
            "mean_interdivision_min": float(gaps.mean()) if gaps.size else None,
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
            "stochastic_engine": self.engine,
            "division": self.division,
            "burned_in": self.burned_in,
            "lineage": None if self.lineage is None else {
                **vars(self.lineage), "division_times": list(self.division_times),
            },
        }

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> Cell:
        validate_snapshot(snap)
        cell = cls.__new__(cls)
        cell.profile = get_profile(snap["biological_type"])
        cell.stochastic = bool(snap["stochastic"])
        cell.seed = snap["seed"]
        # snapshots from before the compiled engine are of fixed-size libroadrunner cells
        cell.engine, cell.division = _engine_choice(
            cell.stochastic, snap.get("stochastic_engine", "roadrunner"),
            snap.get("division", False))
        cell.lineage, cell.division_times = _lineage_from(
            snap.get("lineage") if cell.division else None)
        cell.burned_in = bool(snap.get("burned_in", True))
        cell.packages = [_package_from_entry(p) for p in snap["packages"]]
        cell.time = float(snap["time"])
        cell.settings = {k: float(v) for k, v in snap["settings"].items()}
        cell._build(snap["species"])
        cell.restore(snap)
        return cell

    def restore(self, snap: dict[str, Any]) -> None:
        """Return to a snapshot of this cell: packages, clock, settings, every species amount.

        The snapshot is checked first and applied all or nothing: a bad one changes nothing.
        """
        validate_snapshot(snap)
        if snap["biological_type"] != self.profile.biological_type:
            raise InputError("snapshot is of a different organism")
        if bool(snap["stochastic"]) != self.stochastic or snap["seed"] != self.seed or (
            snap.get("stochastic_engine", "roadrunner"), snap.get("division", False)
        ) != (self.engine, self.division) and self.stochastic:
            raise InputError("snapshot is of a cell with another simulation mode or seed")
        before = self.snapshot()
        old_packages, old_time, old_settings = list(self.packages), self.time, dict(self.settings)
        try:
            # a setting made since the snapshot (a switch, a cap) must go back to the model's
            # default: a fresh build has it, as it has the snapshot's packages
            if [_model_of(p) for p in snap["packages"]] != [
                _model_of(p) for p in before["packages"]
            ] or set(self.settings) - set(snap["settings"]):
                packages = [_package_from_entry(p) for p in snap["packages"]]
                self.packages = packages
                self.settings = {}
                self._build(snap["species"])
            elif snap["packages"] != before["packages"]:  # only copies or strengths: the
                # same model with other parameter values (model/builder.py)
                self.packages = [_package_from_entry(p) for p in snap["packages"]]
                for name, value in package_parameters(self.packages).items():
                    self._rr.setValue(name, value)
            self._check_snapshot_names(snap)
            self.lineage, self.division_times = _lineage_from(
                snap.get("lineage") if self.division else None)
            self.burned_in = bool(snap.get("burned_in", True))
            self.time = float(snap["time"])
            self.settings = {k: float(v) for k, v in snap["settings"].items()}
            for name, value in {**self.settings, **snap["species"]}.items():
                noise = name in snap["species"] and value < NEGLIGIBLE_AMOUNT
                self._rr.setValue(name, 0.0 if noise else float(value))
        except BaseException:
            self.packages, self.time, self.settings = old_packages, old_time, old_settings
            self.lineage, self.division_times = _lineage_from(
                before["lineage"] if self.division else None)
            self.burned_in = before["burned_in"]
            self._build(before["species"])
            raise

    def _check_snapshot_names(self, snap: dict[str, Any]) -> None:
        species = set(self._rr.model.getFloatingSpeciesIds())
        unknown = sorted(set(snap["species"]) - species)
        parameters = set(self._rr.model.getGlobalParameterIds())
        unknown += sorted(set(snap["settings"]) - parameters)
        if unknown:
            raise InputError(
                f"snapshot names {len(unknown)} symbol(s) this cell's model does not have: "
                f"{', '.join(map(repr, unknown[:5]))}"
            )


MAX_KEPT_DIVISIONS = 1000  # division times a cell remembers
BURN_IN_GENERATIONS = 3  # before a stochastic cell's first grow (docs/model.md)
BURN_IN_MAX_MIN = 3000.0  # a slowly growing cell's burn-in stops here


def _engine_choice(stochastic: bool, engine: object, division: object) -> tuple[str, bool]:
    """(engine, division) of a cell; a dividing cell needs the compiled engine."""
    if engine not in STOCHASTIC_ENGINES:
        raise InputError(
            f"stochastic_engine must be one of {', '.join(STOCHASTIC_ENGINES)}, got {engine!r}"
        )
    if division not in (None, True, False):
        raise InputError(f"division must be true or false, got {division!r}")
    if not stochastic:
        return str(engine), False  # deterministic cells are in balanced growth
    if division is None:
        division = engine == "compiled"
    if division and engine != "compiled":
        raise InputError(
            "only the compiled stochastic engine simulates division; with "
            "stochastic_engine='roadrunner' use division=False (--no-division)"
        )
    return str(engine), bool(division)


def _lineage_from(entry: object) -> tuple[ssa.Lineage | None, list[float]]:
    if not entry:
        return None, []
    assert isinstance(entry, dict)  # validate_snapshot checked it
    times = [float(t) for t in entry.get("division_times", [])]
    return ssa.Lineage(float(entry["birth_mass"]), int(entry["generation"]),
                       float(entry["birth_time"]), int(entry["divisions"])), times


def _check_seed(seed: object) -> None:
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED
    ):
        shown = seed if not isinstance(seed, int) or abs(seed) < 10**30 else "a huge integer"
        raise InputError(f"seed must be an integer from 0 to 2**63-1, got {shown!r}")


def _power(bound: float) -> str:
    """A power-of-ten bound as users write it: 1e6, not 1e+06."""
    return f"{bound:.0e}".replace("e+0", "e").replace("e+", "e")


def _finite(value: object, low: float, high: float) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (isinstance(value, int) or math.isfinite(value))
        and low <= value <= high
    )


def validate_snapshot(snap: object) -> None:
    """Refuse anything that is not a cell snapshot (as `Cell.snapshot()` makes) with one
    clear `InputError`; nothing is applied until the whole snapshot has been checked."""
    if not isinstance(snap, dict):
        raise InputError(f"a cell snapshot must be a mapping, got {type(snap).__name__}")
    keys = {"biological_type", "stochastic", "seed", "time", "packages", "settings", "species"}
    missing = sorted(keys - set(snap))
    _check_lineage(snap.get("lineage"))
    if snap.get("stochastic_engine", "roadrunner") not in STOCHASTIC_ENGINES or not all(
        isinstance(snap.get(key, False), bool) for key in ("division", "burned_in")
    ):
        raise InputError("cell snapshot: stochastic_engine, division or burned_in is not valid")
    if missing:
        raise InputError(f"cell snapshot lacks {', '.join(missing)}")
    if not isinstance(snap["biological_type"], str):
        raise InputError("cell snapshot: biological_type must be a string")
    get_profile(snap["biological_type"])
    if not isinstance(snap["stochastic"], bool):
        raise InputError("cell snapshot: stochastic must be true or false")
    _check_seed(snap["seed"])
    if snap["stochastic"] and snap["seed"] is None:
        raise InputError("cell snapshot: a stochastic cell needs a seed")
    if not _finite(snap["time"], 0, MAX_CLOCK_MIN):
        raise InputError(f"cell snapshot: time must be a number from 0 to {MAX_CLOCK_MIN:g} min")
    packages = snap["packages"]
    if not isinstance(packages, list) or len(packages) > 100:
        raise InputError("cell snapshot: packages must be a list of at most 100 entries")
    for item in packages:
        if (
            not isinstance(item, dict)
            or not {"name", "copies"} <= set(item) <= {"name", "copies", "module", "strength"}
            or not _finite(item.get("strength", 1.0), 1e-300, MAX_STRENGTH)
            or not isinstance(item["name"], str)
            or not 0 < len(item["name"]) <= 4096
            or isinstance(item["copies"], bool)
            or not isinstance(item["copies"], int)
            or not MIN_COPIES <= item["copies"] <= MAX_COPIES
        ):
            raise InputError(
                f"cell snapshot: each package must be {{name: str, copies: int "
                f"{MIN_COPIES}-{MAX_COPIES}, strength: number > 0 and <= {MAX_STRENGTH:g} "
                "(optional)}"
            )
        module = item.get("module")
        if module is not None and (
            not isinstance(module, dict)
            or set(module) != {"antimony", "sha256", "origin"}
            or not all(isinstance(v, str) for v in module.values())
            or len(module["antimony"]) > MAX_STORED_MODULE_CHARS
        ):
            raise InputError(
                "cell snapshot: a package's module must be {antimony, sha256, origin} (text)"
            )
    for field, pattern, low, high in (
        ("settings", _SETTING, 0.0, UNCAPPED_RIBOSOMES),
        ("species", None, -NEGLIGIBLE_AMOUNT, MAX_AMOUNT),  # noise is loaded as 0
    ):
        values = snap[field]
        if not isinstance(values, dict) or len(values) > 100_000:
            raise InputError(f"cell snapshot: {field} must be a mapping of names to numbers")
        for name, value in values.items():
            if not isinstance(name, str) or (pattern is not None and not pattern.fullmatch(name)):
                raise InputError(f"cell snapshot: {field} may not set {name!r}")
            if not _finite(value, low, high):
                raise InputError(
                    f"cell snapshot: {field}[{name!r}] must be a number from {low:g} to {high:g}"
                )


def _check_lineage(entry: object) -> None:
    if entry is None:
        return
    fields = {"birth_mass", "generation", "birth_time", "divisions", "division_times"}
    if not isinstance(entry, dict) or set(entry) != fields:
        raise InputError(f"cell snapshot: lineage must be a mapping of {', '.join(sorted(fields))}")
    times = entry["division_times"]
    if (
        not _finite(entry["birth_mass"], 0, MAX_AMOUNT * 1e7)
        or not _finite(entry["birth_time"], 0, MAX_CLOCK_MIN)
        or any(isinstance(entry[k], bool) or not isinstance(entry[k], int)
               or not 0 <= entry[k] <= 10**12 for k in ("generation", "divisions"))
        or not isinstance(times, list) or len(times) > MAX_KEPT_DIVISIONS
        or not all(_finite(t, 0, MAX_CLOCK_MIN) for t in times)
    ):
        raise InputError("cell snapshot: lineage holds a value out of range")


def _package_entry(package: Package) -> dict[str, Any]:
    """A package as a snapshot holds it: built-ins by name, user modules by content."""
    entry: dict[str, Any] = {"name": package.name, "copies": package.copies}
    if package.strength != 1:
        entry["strength"] = package.strength
    if package.source != "built-in":
        entry["module"] = {
            "antimony": package.antimony, "sha256": package.sha256, "origin": package.source,
        }
    return entry


def _model_of(entry: dict[str, Any]) -> dict[str, Any]:
    """What of a package's snapshot entry the model text depends on (not copies or
    strength, which are parameters)."""
    return {k: v for k, v in entry.items() if k not in ("copies", "strength")}


def _package_from_entry(entry: dict[str, Any]) -> Package:
    module = entry.get("module")
    if module is None:  # a built-in (or, from before content addressing, a module's path)
        package = resolve_package(entry["name"], entry["copies"])
    else:
        package = user_module(entry["name"], module["antimony"], source=module["origin"])
        if package.sha256 != module["sha256"]:
            raise InputError(f"stored module {entry['name']!r} does not match its hash")
        package = package.with_copies(entry["copies"])
    return package.with_strength(entry.get("strength", 1.0))


def cache_models(kinds: Iterable[tuple[str, bool]]) -> None:
    """Put the models that new cells of these (organism, stochastic) kinds load in the
    compiled-model cache, compiling the ones it lacks: what a process can do for cells
    about to start in other processes (libroadrunner releases the GIL while compiling)."""
    for organism, stochastic in kinds:
        parameters = get_profile(organism).parameters
        for mode in dict.fromkeys((False, stochastic)):  # ODE first: balanced growth
            text = build_model_text(parameters, stochastic=mode)
            load_roadrunner(text)
            if mode:  # and the compiled stochastic engine's kernel (the C compiler runs
                # in its own process)
                try:
                    ssa.kernel_for_model(text, lambda text=text: antimony_to_sbml(text))
                except ssa.Unsupported:
                    pass  # the cells will say why, in one line


def _gene_column(selection: str) -> str:
    kind, _, gene = selection.partition("_")
    return f"{'protein' if kind == 'p' else 'mrna'}_{gene}"
