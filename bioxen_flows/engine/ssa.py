"""The compiled exact stochastic engine: a model's direct-method kernel, compiled once.

A kernel is C generated from the model's SBML (`ssa_codegen`), compiled with the system's
C compiler (``$CC``, else ``cc``) into this user's private kernel folder and loaded with
ctypes: a model's first stochastic cell on a machine compiles it, every later one (any
process) loads it (`bench/stochastic.py` times both; docs/model.md says why not numba).
Processes that need the same missing kernel compile it once (a lock per kernel, as the
model loader's disk cache does: `model/compiled_cache.py`); a library is used only if its
recorded SHA-256 matches. This is the engine's own cache (kernels are engine code); every
cache of compiled models is in `model/loader.py`.

`run_kernel` advances a state by the direct method, in pieces of `CHUNK_EVENTS` events, so
a long run can be bounded, abandoned and stopped between pieces.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from bioxen_flows.engine.ssa_codegen import KernelSource, Unsupported, generate
from bioxen_flows.errors import InputError

CHUNK_EVENTS = 5_000_000  # ~0.25 s of CPU: how often a long run checks its bounds
MAX_DIVISIONS_KEPT = 10_000  # division times one grow records
COMPILE_FLAGS = ("-O3", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math")
COMPILE_TIMEOUT_S = 120.0
REACHED_END, OUT_OF_EVENTS, BAD_PROPENSITY = 0, 1, 2  # as in ssa_driver.c.txt
_LOCK = threading.Lock()
_KERNELS: dict[str, Kernel] = {}
_DOUBLES = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")


@dataclass(frozen=True)
class Kernel:
    """A compiled model: what its state and parameter vectors hold, and its functions."""

    source: KernelSource
    library: ctypes.CDLL
    compiled: bool  # compiled by this process (not loaded from the kernel folder)

    @property
    def species(self) -> tuple[str, ...]:
        return self.source.species

    @property
    def parameters(self) -> tuple[str, ...]:
        return self.source.parameters

    @property
    def rules(self) -> tuple[str, ...]:
        return self.source.rules


@dataclass
class Lineage:
    """A dividing cell's history: what the adder rule and the metrics need."""

    birth_mass: float
    generation: int = 0
    birth_time: float = 0.0
    divisions: int = 0


@dataclass(frozen=True)
class Division:
    """The division rule: divide once `added_mass` aa have been made since birth (an adder)."""

    weights: np.ndarray  # aa per molecule of each species (protein mass)
    mass_ref: float  # the mass of an average cell, the model's M: size 1
    added_mass: float


@dataclass(frozen=True)
class Result:
    states: np.ndarray  # amounts at each sample time
    sizes: np.ndarray
    generations: np.ndarray
    division_times: list[float]
    events: int


def kernel_for(sbml: str) -> Kernel:
    """The compiled kernel of an SBML model (`Unsupported` when the model has what it cannot
    run or no C compiler is at hand)."""
    return kernel_for_model(sbml, lambda: sbml)


def kernel_for_model(text: str, sbml: Callable[[], str]) -> Kernel:
    """The compiled kernel of the model `text` (any form; `sbml()` gives its SBML): from
    this process, else from the kernel folder's index of texts (no SBML is read), else
    generated and compiled."""
    key = hashlib.sha256(text.encode()).hexdigest()
    with _LOCK:
        kernel = _KERNELS.get(key)
        if kernel is None:
            index = kernel_dir() / f"model_{key}.json"
            source = _indexed(index)
            kernel = _load(source) if source is not None else None
            if kernel is None:  # not compiled here yet, or its library was damaged
                kernel = _load(generate(sbml()))
                assert kernel is not None
                _write_whole(index, json.dumps(_index_entry(kernel.source)))
            _KERNELS[key] = kernel
    return kernel


INDEX_FIELDS = ("species", "parameters", "rules", "reactions", "dilution")
MAX_INDEX_BYTES = 4 << 20


def _index_entry(source: KernelSource) -> dict[str, object]:
    return {"digest": source.digest, **{f: list(getattr(source, f)) for f in INDEX_FIELDS}}


def _indexed(path: Path) -> KernelSource | None:
    """The kernel recorded for a model text (without its C source), or None."""
    try:
        with path.open("rb") as file:
            entry = json.loads(file.read(MAX_INDEX_BYTES))
        lists = {f: tuple(entry[f]) for f in INDEX_FIELDS}
        if not re.fullmatch(r"[0-9a-f]{64}", entry["digest"]) or not all(
            isinstance(v, str) for f in INDEX_FIELDS[:4] for v in lists[f]
        ) or not all(isinstance(v, bool) for v in lists["dilution"]):
            return None
        return KernelSource(source="", digest=entry["digest"], **lists)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def compiles() -> int:
    """Kernels this process compiled (the rest it loaded from the kernel folder)."""
    return sum(kernel.compiled for kernel in _KERNELS.values())


def _write_whole(path: Path, text: str) -> None:
    """Write `path` so that no reader sees it half-written (temp file, then rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def _load(source: KernelSource) -> Kernel | None:
    """The kernel's library, compiled first when missing or damaged; None when that is
    needed and `source` came from the index (it holds no C source)."""
    from bioxen_flows.model.compiled_cache import compile_lock

    folder = kernel_dir()
    library = folder / f"ssa_{source.digest[:40]}.so"
    compiled = False
    with compile_lock(library):
        if not _verified(library):
            if not source.source:
                return None
            _compile(source.source, library)
            compiled = True
        handle = ctypes.CDLL(str(library))
    handle.simulate.restype = ctypes.c_int
    handle.simulate.argtypes = [
        _DOUBLES, _DOUBLES, _DOUBLES, ctypes.c_int64, _DOUBLES, _DOUBLES, _DOUBLES,
        ctypes.c_uint64, ctypes.c_int64, ctypes.c_int, _DOUBLES, ctypes.c_double,
        ctypes.c_double, _DOUBLES, _DOUBLES, ctypes.c_int64, _DOUBLES,
    ]
    handle.observe.restype = None
    handle.observe.argtypes = [_DOUBLES, _DOUBLES, _DOUBLES, ctypes.c_int64, _DOUBLES]
    return Kernel(source, handle, compiled)


def _verified(library: Path) -> bool:
    """Whether `library` is whole: its SHA-256 is the one recorded when it was compiled."""
    try:
        recorded = library.with_suffix(".sha256").read_text().strip()
        return hashlib.sha256(library.read_bytes()).hexdigest() == recorded
    except OSError:
        return False


def _compile(text: str, library: Path) -> None:
    """Compile C `text` into `library` (temp files, then rename), or `Unsupported`."""
    compiler = os.environ.get("CC") or "cc"
    if shutil.which(compiler) is None:
        raise Unsupported(f"no C compiler ({compiler!r}) to compile the model's kernel")
    with tempfile.TemporaryDirectory(dir=library.parent) as work:
        c_file, built = Path(work, "kernel.c"), Path(work, "kernel.so")
        c_file.write_text(text)
        try:
            subprocess.run([compiler, *COMPILE_FLAGS, "-o", str(built), str(c_file), "-lm"],
                           check=True, capture_output=True, timeout=COMPILE_TIMEOUT_S,
                           start_new_session=True)  # a terminal's Ctrl-C is the command's
        except (OSError, subprocess.SubprocessError) as error:
            detail = getattr(error, "stderr", b"") or b""
            raise Unsupported(
                f"the C compiler failed on the model's kernel: {detail.decode()[:200]}"
            ) from None
        digest = hashlib.sha256(built.read_bytes()).hexdigest()
        Path(work, "kernel.sha256").write_text(digest)
        os.replace(built, library)
        os.replace(Path(work, "kernel.sha256"), library.with_suffix(".sha256"))


@cache
def kernel_dir() -> Path:
    """This user's private kernel folder for this host; a private temporary one when the
    model cache is off or the folder is not private (the libraries are machine code)."""
    from bioxen_flows.model.compiled_cache import private_folder
    from bioxen_flows.settings import get_settings

    where = f"{socket.gethostname()}-{platform.machine()}"
    settings = get_settings()
    folder = None
    if settings.model_cache:
        folder = private_folder(
            settings.home / "ssa-kernels" / re.sub(r"[^A-Za-z0-9._-]", "_", where))
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="bioxen-ssa-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def run_kernel(
    kernel: Kernel,
    amounts: np.ndarray,
    parameters: np.ndarray,
    times: np.ndarray,
    *,
    seed: int,
    max_events: int,
    division: Division | None,
    lineage: Lineage | None,
    check: Callable[[float, int], None] | None,
) -> Result:
    """Advance `amounts` (in place) over `times`, sampling the state at each.

    At most `max_events` events (else `InputError`, amounts as they were); `check(t, events)`
    runs between pieces of `CHUNK_EVENTS` events and may raise to abandon the run (amounts
    as they were)."""
    n = times.shape[0]
    out_x = np.empty((n, len(kernel.species)))
    out_size = np.empty(n)
    out_generation = np.empty(n)
    start = amounts.copy()
    state = np.array([lineage.birth_mass, lineage.generation, lineage.birth_time,
                      lineage.divisions] if lineage else [0.0, 0.0, 0.0, 0.0])
    div = division or Division(np.zeros(len(kernel.species)), 1.0, np.inf)
    division_times: list[float] = []
    buffer = np.empty(MAX_DIVISIONS_KEPT)
    io = np.array([float(times[0]), 0.0, 0.0, -1.0, 0.0])
    events, piece = 0, 0
    times = np.ascontiguousarray(times, dtype=np.float64)
    while True:
        budget = min(CHUNK_EVENTS, max_events - events)
        piece_seed = zlib.crc32(f"{seed}:{piece}".encode())
        status = kernel.library.simulate(
            amounts, parameters, times, n, out_x, out_size, out_generation, piece_seed,
            budget, division is not None, div.weights, div.mass_ref, div.added_mass, state,
            buffer, MAX_DIVISIONS_KEPT, io)
        divided = int(io[4])
        division_times += buffer[:min(divided, MAX_DIVISIONS_KEPT)].tolist()
        events += int(io[2])
        piece += 1
        if status == REACHED_END:
            break
        if status == BAD_PROPENSITY:
            amounts[:] = start
            raise InputError(
                f"the stochastic simulation stopped at {io[0]:g} min: the rate of reaction "
                f"{kernel.source.reactions[int(io[3])]!r} became negative, NaN or infinite; "
                "every rate must be a finite number >= 0"
            )
        if events >= max_events:
            amounts[:] = start
            raise InputError(
                f"the stochastic simulation took more than {max_events:.2g} events by "
                f"{io[0]:g} min; grow for less at a time, or use the deterministic mode"
            )
        if check is not None:
            try:
                check(float(io[0]), events)
            except BaseException:
                amounts[:] = start
                raise
    if lineage is not None:
        lineage.birth_mass, lineage.birth_time = float(state[0]), float(state[2])
        lineage.generation, lineage.divisions = int(state[1]), int(state[3])
    return Result(out_x, out_size, out_generation, division_times, events)


def observe(kernel: Kernel, states: np.ndarray, parameters: np.ndarray,
            times: np.ndarray) -> np.ndarray:
    """The value of every assignment rule at each state (a column per `kernel.rules`)."""
    out = np.empty((states.shape[0], max(1, len(kernel.rules))))
    kernel.library.observe(np.ascontiguousarray(states), parameters,
                           np.ascontiguousarray(times, dtype=np.float64), states.shape[0], out)
    return out[:, :len(kernel.rules)]


__all__ = ["Division", "Kernel", "Lineage", "Result", "Unsupported", "compiles", "kernel_for",
           "observe", "run_kernel"]
