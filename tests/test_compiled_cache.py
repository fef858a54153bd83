"""The compiled-model cache: a model compiled once loads in later processes, simulates
exactly as a fresh compile, and is used only when it is private to its user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bioxen_flows.engine.cell import Cell
from bioxen_flows.model import compiled_cache
from bioxen_flows.model.loader import antimony_to_sbml, load_roadrunner

GROW = """
import json, sys
from bioxen_flows.engine.cell import Cell
stochastic = sys.argv[2] == "stochastic"
cell = Cell(sys.argv[1], stochastic=stochastic, seed=7 if stochastic else None)
cell.install("gfp_reporter")
cell.grow(120)
print(json.dumps({"metrics": cell.metrics()}))
"""


def grow_in_a_new_process(organism: str, mode: str) -> dict:
    run = subprocess.run([sys.executable, "-c", GROW, organism, mode], capture_output=True,
                         encoding="utf-8", timeout=120, env=os.environ.copy(), check=True)
    return json.loads(run.stdout)


@pytest.mark.parametrize("organism,mode", [("ecoli", "deterministic"), ("syn3a", "stochastic")])
def test_a_cached_model_gives_the_same_cell_in_a_later_process(
    bioxen_home: Path, organism: str, mode: str
) -> None:
    first = grow_in_a_new_process(organism, mode)  # compiles, fills the cache
    states = list((bioxen_home / "model-cache").glob("*/*.rrstate"))
    assert len(states) >= 2  # the host model and the one with the package
    second = grow_in_a_new_process(organism, mode)  # loads them
    assert second["metrics"] == first["metrics"]


def test_a_loaded_model_simulates_exactly_as_a_fresh_compile() -> None:
    cell = Cell("minimal_cell")
    cell.install("gfp_reporter", copies=3)
    text = cell.model_text()
    load_roadrunner(text)  # compiled and saved
    loaded = compiled_cache.load(text)
    assert loaded is not None
    import roadrunner

    fresh = roadrunner.RoadRunner(antimony_to_sbml(text))
    a, b = loaded.simulate(0, 600, 61), fresh.simulate(0, 600, 61)
    assert list(a.colnames) == list(b.colnames)
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_a_cache_others_can_write_is_not_used(bioxen_home: Path) -> None:
    text = Cell("syn3a").model_text()
    folder = compiled_cache.cache_dir()
    assert folder is not None and (folder.stat().st_mode & 0o777) == 0o700
    for state in folder.glob("*.rrstate"):
        state.unlink()
    folder.chmod(0o777)  # someone could plant machine code here
    assert compiled_cache.cache_dir() is None
    assert compiled_cache.load(text) is None
    load_roadrunner(text)
    assert not list(folder.glob("*.rrstate"))  # nor is anything written there


def test_a_damaged_state_is_dropped_and_the_model_compiled_again() -> None:
    text = Cell("ecoli").model_text()
    load_roadrunner(text)
    state = compiled_cache._path(compiled_cache.cache_dir(), text)
    state.write_bytes(state.read_bytes()[:5000])  # a truncated file
    assert compiled_cache.load(text) is None
    assert not state.exists()
    assert load_roadrunner(text).getValue("M") > 0
    assert state.exists()


def test_the_cache_can_be_turned_off(monkeypatch: pytest.MonkeyPatch, bioxen_home: Path) -> None:
    monkeypatch.setenv("BIOXEN_MODEL_CACHE", "0")
    load_roadrunner(Cell("ecoli").model_text())
    assert not (bioxen_home / "model-cache").exists()


def test_the_cache_keeps_at_most_max_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled_cache, "MAX_FILES", 2)
    cell = Cell("syn3a")
    texts = [cell.model_text()]
    for copies in (1, 2):
        variant = Cell("syn3a")
        variant.install("gfp_reporter", copies=copies)
        texts.append(variant.model_text())
    for text in texts:
        load_roadrunner(text)
    assert len(list(compiled_cache.cache_dir().glob("*.rrstate"))) == 2
    assert compiled_cache.load(texts[-1]) is not None  # the newest stay


BUILD = """
import sys
from bioxen_flows.engine.cell import Cell
cell = Cell("ecoli")
cell.install("gfp_reporter", copies=int(sys.argv[1]))
print(cell.grow(30).column("growth_rate_per_min")[-1])
"""


def test_processes_filling_the_cache_at_once_agree(bioxen_home: Path) -> None:
    """Four processes compile and save the same new model at the same moment: each writes a
    whole file under its own name and renames it, so none reads a half-written state."""
    runs = [subprocess.Popen([sys.executable, "-c", BUILD, "7"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, encoding="utf-8", env=os.environ.copy())
            for _ in range(4)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err for _, err in outputs]
    assert len({out for out, _ in outputs}) == 1
    folder = next((bioxen_home / "model-cache").iterdir())
    assert not list(folder.glob("*.tmp"))
    again = subprocess.run([sys.executable, "-c", BUILD, "7"], capture_output=True,
                           encoding="utf-8", timeout=120, env=os.environ.copy(), check=True)
    assert again.stdout == outputs[0][0]


def test_a_bad_model_cache_setting_is_one_line() -> None:
    from tests.helpers import bioxen, refused

    refused(bioxen("create", "v", "syn3a", env={"BIOXEN_MODEL_CACHE": "sometimes"}),
            "BIOXEN_MODEL_CACHE")


COMPILE_ONCE = """
import sys, time
import roadrunner
from bioxen_flows.model import compiled_cache
from bioxen_flows.model.builder import build_model_text
from bioxen_flows.model.loader import antimony_to_sbml

text = build_model_text(stochastic=True) + "\\n// a model no process compiled yet"
compiled = []
def compile_model():
    compiled.append(1)
    return roadrunner.RoadRunner(antimony_to_sbml(text))
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))  # all four miss it at once
rr = compiled_cache.load_or_compile(text, compile_model)
print(len(compiled), rr.model.getNumFloatingSpecies())
"""


def test_processes_needing_the_same_new_model_compile_it_once(bioxen_home: Path) -> None:
    """Four processes miss the same model at the same moment: one compiles it, the others
    wait for it and load it (a flow's workers would otherwise each pay the compile)."""
    start = str(time.time() + 5)
    runs = [subprocess.Popen([sys.executable, "-c", COMPILE_ONCE, start], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, encoding="utf-8", env=os.environ.copy())
            for _ in range(4)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err for _, err in outputs]
    compiles = [int(out.split()[0]) for out, _ in outputs]
    assert sorted(compiles) == [0, 0, 0, 1]
    assert len({out.split()[1] for out, _ in outputs}) == 1


def test_models_compiled_ahead_are_in_the_cache_for_new_cells() -> None:
    """What a flow compiles for its workers while they start: each organism's ODE model
    (balanced growth) and, for stochastic cells, its Gillespie model."""
    from bioxen_flows.engine.cell import cache_models
    from bioxen_flows.model.builder import build_model_text
    from bioxen_flows.organisms.profiles import get_profile

    def cached(organism: str, stochastic: bool) -> bool:
        text = build_model_text(get_profile(organism).parameters, stochastic=stochastic)
        return compiled_cache.load(text) is not None

    assert not cached("minimal_cell", True)
    cache_models([("minimal_cell", True), ("ecoli", False)])
    assert cached("minimal_cell", True) and cached("minimal_cell", False)
    assert cached("ecoli", False) and not cached("ecoli", True)


CELLS_IN_A_NEW_PROCESS = """
import roadrunner
from bioxen_flows.engine.cell import Cell

compiles = []
RoadRunner = roadrunner.RoadRunner
def counting(*args):
    if args:  # a model to compile (a load from the cache starts empty)
        compiles.append(1)
    return RoadRunner(*args)
roadrunner.RoadRunner = counting
for seed in (1, 2, 3):
    Cell("syn3a")
    Cell("syn3a", stochastic=True, seed=seed)
print(len(compiles))
"""


def test_a_process_builds_cached_models_without_compiling_them_again() -> None:
    """Once the models are cached, a new process's cells all load them: libroadrunner's
    own reuse of compiled code does not know a loaded model, and the second cell of each
    model used to compile it again (0.35-0.73 s)."""
    def compiles() -> int:
        run = subprocess.run([sys.executable, "-c", CELLS_IN_A_NEW_PROCESS], check=True,
                             capture_output=True, encoding="utf-8", timeout=120,
                             env=os.environ.copy())
        return int(run.stdout.split()[-1])

    assert compiles() == 2  # the first process compiles the ODE and the stochastic model
    assert compiles() == 0


def test_a_state_left_half_written_is_removed_once_stale() -> None:
    """A process that ended while saving a state (a command ending while its flow still
    compiled ahead) leaves a temp file: the next save removes it once it is an hour old,
    never one another process may still be writing."""
    Cell("syn3a")
    folder = compiled_cache.cache_dir()
    stale, fresh = folder / "stale.tmp", folder / "fresh.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    hours_ago = time.time() - 2 * 3600
    os.utime(stale, (hours_ago, hours_ago))
    cell = Cell("syn3a")
    cell.install("gfp_reporter", copies=3)  # a new model: compiled and saved
    assert not stale.exists()
    assert fresh.exists()


def test_a_compile_lock_held_forever_delays_others_only_so_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process that hangs while holding a model's compile lock: the others wait at most
    LOCK_WAIT_S, then compile the model themselves."""
    import fcntl

    from bioxen_flows.model.builder import build_model_text

    text = build_model_text() + "\n// a model whose compile lock another process holds"
    lock = compiled_cache._path(compiled_cache.cache_dir(), text).with_suffix(".lock")
    monkeypatch.setattr(compiled_cache, "LOCK_WAIT_S", 0.5)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held through another open file: as another process
        began = time.monotonic()
        rr = load_roadrunner(text)
        waited = time.monotonic() - began
    finally:
        os.close(fd)
    assert rr.model.getNumFloatingSpecies() > 0
    assert waited >= 0.5
    assert compiled_cache.load(text) is not None  # and it was kept for the next process


def test_a_directory_where_the_compile_lock_goes_does_not_stop_the_compile() -> None:
    from bioxen_flows.model.builder import build_model_text

    text = build_model_text() + "\n// a model whose lock path is taken"
    compiled_cache._path(compiled_cache.cache_dir(), text).with_suffix(".lock").mkdir()
    assert load_roadrunner(text).model.getNumFloatingSpecies() > 0
    assert compiled_cache.load(text) is not None


def test_the_loader_keeps_a_bounded_number_of_models_alive(monkeypatch) -> None:
    """Keep-alive holds the most recently loaded models, at most `KEEP_ALIVE`; `forget`
    drops them (and only them with texts=False)."""
    from bioxen_flows.model import loader
    from bioxen_flows.model.builder import build_model_text

    monkeypatch.setattr(loader, "KEEP_ALIVE", 2)
    loader.forget(texts=False)
    texts = [build_model_text({"v_t": 700.0 + k}) for k in range(3)]
    for text in texts:
        load_roadrunner(text)
    assert list(loader._alive) == texts[1:]
    sbml_cached = antimony_to_sbml.cache_info().currsize
    loader.forget(texts=False)
    assert not loader._alive and antimony_to_sbml.cache_info().currsize == sbml_cached


def test_the_balanced_state_is_computed_once_and_handed_out_as_a_copy(monkeypatch) -> None:
    from bioxen_flows.model import loader

    first = loader.balanced_growth_state("syn3a")
    first["r"] = -1.0  # a caller's change must not reach the next cell
    monkeypatch.setattr(loader, "load_roadrunner", lambda text: pytest.fail("loaded again"))
    second = loader.balanced_growth_state("syn3a")
    assert second["r"] > 0
