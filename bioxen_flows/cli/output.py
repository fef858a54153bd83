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


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
          whole: Sequence[int] = (0,), wide: bool = False) -> Table:
    """A table that fits the terminal (80 columns too): the `whole` columns (ids) are never
    cut or wrapped, so rows that differ only in their last characters stay apart; the
    others wrap, and a long word folds instead of ending in an ellipsis. `wide`: one line
    per row however wide (print it on `wide_console()`)."""
    from rich import box
    from rich.table import Table

    cells = [[str(cell) for cell in row] for row in rows]
    texts = [[column, *(row[i] for row in cells)] for i, column in enumerate(columns)]
    widths = [max(len(line) for text in col for line in text.splitlines() or [""])
              for col in texts]
    words = [widths[i] if i in whole else max(len(w) for t in col for w in [*t.split(), ""])
             for i, col in enumerate(texts)]
    budget = 10**6 if wide else console().width - 2 * (len(columns) - 1)
    # the widest column that is not an id gives way first: down to its longest word
    # (wrapping between words), then, if the row still cannot fit, down to 4 (folding)
    for floor in (words, [4] * len(widths)):
        while sum(widths) > budget:
            shrinkable = [i for i in range(len(widths))
                          if i not in whole and widths[i] > max(floor[i], 4)]
            if not shrinkable:
                break
            widths[max(shrinkable, key=widths.__getitem__)] -= 1
    out = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                show_edge=False, pad_edge=False, collapse_padding=True)
    for i, column in enumerate(columns):
        out.add_column(column, width=widths[i], no_wrap=i in whole, overflow="fold")
    for row in cells:
        out.add_row(*row)
    return out


def wide_console() -> Console:
    """A console that never wraps a table (`--wide`: one line per row, for wide screens or
    a pager that scrolls sideways)."""
    from rich.console import Console

    return Console(highlight=False, markup=False, soft_wrap=True, width=10_000)


def compact_time(iso: str | None) -> str:
    """`2026-12-05T11:41:50.123+00:00` as `12-05 11:41:50`: the date and second a person
    tells entries apart by, in 14 characters (`-` when there is none)."""
    if not iso:
        return "-"
    return f"{iso[5:10]} {iso[11:19]}"


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, the cut marked with an ellipsis (for free-text detail,
    never for ids)."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


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
