"""Rendering: rich tables for people, strict JSON for scripts.

rich is imported inside the functions that draw, so `bioxen --help` never pays for it.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bioxen_flows.engine import UNCAPPED_RIBOSOMES
from bioxen_flows.serialization import json_safe

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def print_json(value: Any, *, indent: int | None = 2) -> None:
    """Strict JSON (no NaN/Infinity) on stdout, so any JSON parser reads it."""
    sys.stdout.write(json.dumps(json_safe(value), indent=indent, allow_nan=False) + "\n")
    sys.stdout.flush()


def console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    # markup off: VM ids, gene names and library messages may contain [brackets];
    # soft wrap: a message stays one line (tables are still fitted to the width)
    return Console(stderr=stderr, highlight=False, markup=False, soft_wrap=True)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A table with right-aligned numeric-looking columns left to rich's defaults."""
    from rich.table import Table

    out = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*(str(cell) for cell in row))
    return out


def plain_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns padded with spaces: for long listings, where drawing a rich table costs
    ~0.4 ms a row (0.43 s for 1,000 VMs)."""
    cells = [[str(c) for c in columns], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def key_values(title: str | None, rows: Iterable[tuple[str, Any]]) -> Table:
    from rich.table import Table

    out = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    out.add_column(style="bold")
    out.add_column()
    for key, value in rows:
        out.add_row(key, str(value))
    return out


def number(value: Any, digits: int = 4) -> str:
    """Short human form of a model number: 4 significant digits, thousands separators."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"  # missing: '-' in text, null in JSON, empty in CSV
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if not math.isfinite(value):
        return "inf" if value > 0 else "-inf"
    if abs(value) >= 1e12:  # no 40-digit numbers: beyond a trillion, scientific notation
        return f"{value:.{digits}g}"
    if isinstance(value, int) or (abs(value) >= 1000 and float(value).is_integer()):
        return f"{value:,.0f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def doubling(minutes: float | None) -> str:
    """A doubling time for people: `28.74 min`, or `no growth` for a cell that does not grow
    (its doubling time is infinite in the API and null in JSON)."""
    if minutes is None or (isinstance(minutes, float) and not math.isfinite(minutes)):
        return "no growth"
    return f"{number(minutes)} min"


def duration(seconds: float) -> str:
    """Wall-clock uptime as 3s, 4m 05s or 2h 03m."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def allocations(alloc: Mapping[str, Any]) -> str:
    parts = []
    if alloc.get("atp_percent") is not None:
        parts.append(f"ATP {number(alloc['atp_percent'])} %")
    if alloc.get("ribosomes") is not None:
        parts.append(f"ribosomes {number(alloc['ribosomes'])}")
    return ", ".join(parts) or "uncapped"


def per_gene(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{gene} {number(v)}" for gene, v in values.items()) or "-"


def metrics_rows(m: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The metrics a person reads first, with their units (docs/api.md, Metrics)."""
    rib_cap = m.get("ribosome_cap")
    rows = [
        ("simulated time", f"{number(m['simulated_time_min'])} min"),
        ("mode", m.get("mode", "-")),
        ("growth rate", f"{number(m['growth_rate_per_min'])} 1/min"),
        ("doubling time", doubling(m["doubling_time_min"])),
        ("ribosomes", f"{number(m['ribosomes_total'])} (free {number(m['ribosomes_free'])}, "
                      f"translating {number(m['ribosomes_translating'])})"),
        ("ribosome utilization", f"{number(m['ribosome_utilization_percent'])} %"),
        ("atp_percent", f"{number(m['atp_percent'])} % of maximal elongation"),
        ("elongation", f"{number(m['elongation_rate_aa_per_min'])} aa/min"),
        ("nutrient", f"{number(m['nutrient_molecules'])} molecules"),
        ("ATP cap", f"{number(m['atp_cap_percent'])} %"),
        ("ribosome cap", "uncapped" if rib_cap is None or rib_cap >= UNCAPPED_RIBOSOMES
         else number(rib_cap)),
        ("packages", ", ".join(m.get("installed_packages") or []) or "-"),
    ]
    if m.get("protein_molecules"):
        rows.append(("guest proteins", per_gene(m["protein_molecules"]) + " molecules"))
    if m.get("operon_states"):
        rows.append(("operons", ", ".join(f"{k} {v}" for k, v in m["operon_states"].items())))
    if m.get("transcription_on"):
        rows.append(("transcription", ", ".join(
            f"{k} {'on' if v else 'off'}" for k, v in m["transcription_on"].items())))
    if m.get("plasmid_count"):
        rows.append(("plasmid copies", str(m["plasmid_count"])))
    return rows


def one_line(message: object) -> str:
    """Error messages go on one line (pydantic and others may span several)."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return "; ".join(lines) or type(message).__name__


def error_text(exc: BaseException) -> str:
    """What a user reads for a refused input: the library's message, or the file and reason."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return one_line(exc)
