"""Run a parsed process program against a cell, all or nothing.

Parsing (process_language) rejects anything that is not a literal call before a
single step runs; a step that fails at run time (an unknown package, a gene not
installed) rolls the cell back to where the program started.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bioxen_flows.engine.cell import Cell, Trajectory
from bioxen_flows.engine.process_language import ProcessCall, parse_process


def run_program(cell: Cell, code: str) -> dict[str, Any]:
    """Execute `code` on `cell`; returns the time series (records) and a metrics summary."""
    calls = parse_process(code, cell.profile.biological_type)
    before = cell.snapshot()
    segments: list[Trajectory] = []
    try:
        for call in calls:
            trajectory = _run_call(cell, call)
            if trajectory is not None:
                segments.append(trajectory)
    except ValueError as exc:
        cell.restore(before)
        raise ValueError(f"line {call.line}: {call.source}: {exc}") from exc
    return {
        "calls": [call.source for call in calls],
        "timeseries": _concatenate(segments),
        "summary": cell.metrics(),
    }


def _run_call(cell: Cell, call: ProcessCall) -> Trajectory | None:
    args = call.args
    if call.name == "grow":
        return cell.grow(float(args["minutes"]))  # type: ignore[arg-type]
    if call.name == "install":
        copies = args["copies"]
        cell.install(str(args["package"]), copies=None if copies is None else int(copies))  # type: ignore[call-overload]
    elif call.name in ("start_transcription", "stop_transcription"):
        cell.set_transcription(list(args["genes"]), on=call.name == "start_transcription")  # type: ignore[call-overload]
    elif call.name == "manage_operons":
        cell.set_operons(list(args["operons"]), induced=args["action"] == "induce")  # type: ignore[call-overload]
    elif call.name == "set_nutrient":
        cell.set_nutrient(float(args["level"]))  # type: ignore[arg-type]
    else:  # the parser only lets known calls through; reaching here is a programming error
        raise RuntimeError(f"no executor for process call {call.name!r}")
    return None


def _concatenate(segments: list[Trajectory]) -> list[dict[str, float]]:
    """One record list over all grow() segments; columns may grow as packages are added."""
    records: list[dict[str, float]] = []
    for segment in segments:
        rows = segment.values if not records else segment.values[1:]  # skip repeated joint
        records += Trajectory(segment.columns, np.asarray(rows)).to_records()
    return records
