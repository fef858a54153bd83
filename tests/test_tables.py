"""Every table `bioxen` draws fits 80 columns, and ids are never cut (issue 26).

Two VMs whose ids differ only at the end (`cmp-7c9b32f1-...-r1`, `...-r2`) must stay two
different rows on an 80-column terminal; long free text wraps or is clipped instead.
"""

from __future__ import annotations

import io
import time
from typing import Any

from rich.console import Console

from bioxen_flows.cli.sweep import best_table
from tests.helpers import ok

NARROW = {"COLUMNS": "80"}
IDS = ("cmp-7c9b32f1-minimal_cell-r1", "cmp-7c9b32f1-minimal_cell-r2")


def _fits(text: str, *whole: str) -> None:
    # a file path is whole too, however long the test's temporary folder makes it
    too_long = [line for line in text.splitlines() if len(line) > 80 and "/tmp/" not in line]
    assert not too_long, too_long
    for word in whole:
        assert word in text, f"{word} cut in:\n{text}"


def test_every_cli_table_fits_80_columns_with_whole_ids() -> None:
    for vm_id in IDS:
        ok("create", vm_id, "syn3a")
    ok("allocate", IDS[0], "--atp", "40", "--ribosomes", "300")
    ok("start", IDS[0])
    ok("quota", "set", "--owner", "a-laboratory-with-a-long-name", "--vms", "4")
    _fits(ok("list", env=NARROW).stdout, *IDS)
    audit = ok("audit", env=NARROW).stdout
    _fits(audit, *IDS)
    assert "+00:00" not in audit and time.strftime("%m-%d", time.gmtime()) in audit  # compact
    _fits(ok("quota", env=NARROW).stdout, "a-laboratory-with-a-long-name")
    _fits(ok("settings", env=NARROW).stdout)
    _fits(ok("status", IDS[0], env=NARROW).stdout, IDS[0])
    _fits(ok("resources", IDS[0], env=NARROW).stdout, IDS[0])
    # detail on demand: one line per row however long
    wide = ok("audit", "--wide", env=NARROW).stdout
    assert any(len(line) > 80 for line in wide.splitlines())
    assert "flow run" in wide and "+00:00" in wide
    assert all(len(line.split()) >= 7 for line in ok("list", "--wide", env=NARROW)
               .stdout.splitlines()[2:])  # no row wrapped


def test_the_sweep_best_point_table_fits_80_columns() -> None:
    best: list[dict[str, Any]] = [
        {"organism": organism, "strength": 0.5, "copies": 4, "protein_per_cell_per_hour":
         123456.789, "burden_percent": 4.321, "growth_rate_per_min": 0.0123456,
         "doubling_time_min": 56.1234}
        for organism in ("minimal_cell", "ecoli", "syn3a")]
    sink = io.StringIO()
    Console(width=80, file=sink, markup=False).print(best_table(best, 5.0))
    text = sink.getvalue()
    _fits(text, "minimal_cell", "protein", "doubling")
    assert "…" not in text  # no header cut to `protein/…`
