"""Hostile compiled-model cache: entries swapped between organisms, truncated at many
points, and bit-flipped at a spread of offsets. Each is a miss before any byte reaches
libroadrunner/LLVM: the cell's numbers equal an uncached compile's, one warning is
logged, and the entry is replaced by a good one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bioxen_flows.engine.cell import Cell
from bioxen_flows.model import compiled_cache

ORGANISMS = ("syn3a", "ecoli")
TRUNCATE_AT = (0, 1, 7, 8, 40, compiled_cache.HEADER_SIZE - 1, compiled_cache.HEADER_SIZE,
               compiled_cache.HEADER_SIZE + 1, 0.25, 0.5, 0.75, -1)  # floats: of the length
FLIP_AT = (0, 5, 9, 30, 41, 72, 79, compiled_cache.HEADER_SIZE, 0.1, 0.3, 0.5, 0.7, 0.9, -1)


def numbers(organism: str) -> tuple[float, float]:
    cell = Cell(organism)
    cell.grow(30)
    metrics = cell.metrics()
    return metrics["growth_rate_per_min"], metrics["ribosomes_total"]


@pytest.fixture(scope="module")
def uncached() -> dict[str, tuple[float, float]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BIOXEN_MODEL_CACHE", "0")
        return {organism: numbers(organism) for organism in ORGANISMS}


@pytest.fixture
def warnings() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(compiled_cache.__name__)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def entry(organism: str) -> Path:
    """The cache file of `organism`'s host model, made good by building a cell."""
    Cell(organism)
    text = Cell(organism).model_text()
    path = compiled_cache._path(compiled_cache.cache_dir(), text)
    assert compiled_cache._verified_state(path, text) is not None
    return path


def offset(where: int | float, size: int) -> int:
    return int(where * size) if isinstance(where, float) else where % size if where < 0 \
        else where


def check_recovers(organism: str, path: Path, uncached: dict, warnings: list) -> None:
    warnings.clear()
    assert numbers(organism) == uncached[organism]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "compiled-model cache" in warnings[0].getMessage()
    text = Cell(organism).model_text()
    assert compiled_cache._verified_state(path, text) is not None  # replaced by a good one
    assert len(warnings) == 1  # and the good one loads silently


@pytest.mark.parametrize("victim,donor", [("syn3a", "ecoli"), ("ecoli", "syn3a")])
def test_another_models_entry_copied_over_is_a_miss(victim: str, donor: str, uncached: dict,
                                                     warnings: list) -> None:
    path = entry(victim)
    path.write_bytes(entry(donor).read_bytes())
    check_recovers(victim, path, uncached, warnings)


@pytest.mark.parametrize("organism", ORGANISMS)
@pytest.mark.parametrize("where", TRUNCATE_AT)
def test_a_truncated_entry_is_a_miss(organism: str, where: int | float, uncached: dict,
                                     warnings: list) -> None:
    path = entry(organism)
    data = path.read_bytes()
    path.write_bytes(data[:offset(where, len(data))])
    check_recovers(organism, path, uncached, warnings)


@pytest.mark.parametrize("organism", ORGANISMS)
@pytest.mark.parametrize("where", FLIP_AT)
def test_a_flipped_bit_is_a_miss(organism: str, where: int | float, uncached: dict,
                                 warnings: list) -> None:
    path = entry(organism)
    data = bytearray(path.read_bytes())
    at = offset(where, len(data))
    data[at] ^= 1 << (at % 8)
    path.write_bytes(bytes(data))
    check_recovers(organism, path, uncached, warnings)


@pytest.mark.parametrize("organism", ORGANISMS)
def test_a_bare_libroadrunner_state_or_extra_bytes_is_a_miss(organism: str, uncached: dict,
                                                             warnings: list) -> None:
    path = entry(organism)
    data = path.read_bytes()
    path.write_bytes(data + b"\0")  # trailing bytes: length does not match
    check_recovers(organism, path, uncached, warnings)
    path.write_bytes(data[compiled_cache.HEADER_SIZE:])  # the old, unverified format
    check_recovers(organism, path, uncached, warnings)
