"""Run a parsed process program against a cell, all or nothing, at a bounded cost.

Parsing (process_language) rejects anything that is not a literal call, and any program
whose total simulated time is over the limit, before a single step runs; a step that
fails at run time (an unknown package, a gene not installed, a failed simulation, or any
other exception) rolls the cell back to where the program started.

Long programs are downsampled: a program keeps at most `MAX_PROGRAM_POINTS` time points
(one per simulated minute when they fit), so its result has a bounded size.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bioxen_flows.engine.cell import Cell, Trajectory
from bioxen_flows.engine.process_language import ProcessCall, parse_process
from bioxen_flows.errors import BioXenError, InputError

MAX_PROGRAM_POINTS = 10_001  # time points a program returns, over all its grow() calls


def run_program(cell: Cell, code: str) -> dict[str, Any]:
    """Execute `code` on `cell`; returns the time series (records) and a metrics summary."""
    calls = parse_process(code, cell.profile.biological_type, stochastic=cell.stochastic)
    total = sum(float(c.args["minutes"]) for c in calls if c.name == "grow")  # type: ignore[arg-type]
    per_minute = min(1.0, (MAX_PROGRAM_POINTS - 1) / total) if total > 0 else 1.0
    before = cell.snapshot()
    segments: list[Trajectory] = []
    call: ProcessCall | None = None
    try:
        for call in calls:
            trajectory = _run_call(cell, call, per_minute)
            if trajectory is not None:
                segments.append(trajectory)
    except BaseException as exc:  # all or nothing, whatever went wrong
        cell.restore(before)
        where = f"line {call.line}: {call.source}" if call is not None else "program"
        if isinstance(exc, InputError):
            raise InputError(f"{where}: {exc}") from exc
        if isinstance(exc, RuntimeError) and not isinstance(exc, BioXenError):
            # libroadrunner reports a failed integration (e.g. a stiff user module) this way
            raise InputError(f"{where}: the simulation failed: {exc}") from exc
        raise
    return {
        "calls": [call.source for call in calls],
        "timeseries": _concatenate(segments),
        "summary": cell.metrics(),
    }


def _run_call(cell: Cell, call: ProcessCall, per_minute: float) -> Trajectory | None:
    args = call.args
    if call.name == "grow":
        minutes = float(args["minutes"])  # type: ignore[arg-type]
        points = max(2, min(math.ceil(minutes * per_minute), MAX_PROGRAM_POINTS - 1) + 1)
        return cell.grow(minutes, points=points)
    if call.name == "install":
        copies, strength = args["copies"], args["strength"]
        cell.install(str(args["package"]), copies=None if copies is None else int(copies),  # type: ignore[call-overload]
                     strength=None if strength is None else float(strength))  # type: ignore[arg-type]
    elif call.name in ("start_transcription", "stop_transcription"):
        cell.set_transcription(list(args["genes"]), on=call.name == "start_transcription")  # type: ignore[call-overload]
    elif call.name == "manage_operons":
        cell.set_operons(list(args["operons"]), induced=args["action"] == "induce")  # type: ignore[call-overload]
    elif call.name == "set_nutrient":
        cell.set_nutrient(float(args["level"]))  # type: ignore[arg-type]
    else:  # the parser only lets known calls through; reaching here is a programming error
        raise BioXenError(f"no executor for process call {call.name!r}")
    return None


def _concatenate(segments: list[Trajectory]) -> list[dict[str, float]]:
    """One record list over all grow() segments; columns may grow as packages are added."""
    records: list[dict[str, float]] = []
    for segment in segments:
        rows = segment.values if not records else segment.values[1:]  # skip repeated joint
        records += Trajectory(segment.columns, np.asarray(rows)).to_records()
    return records
