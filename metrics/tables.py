"""Tables of results: rows (dicts with the same keys) as aligned text, Markdown or CSV rows, and
:class:`Tables`, every table of a result computed once and then rendered by each writer."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .digits import NOT_AVAILABLE, with_intervals

#: Rows of a table: dicts with the same keys.
Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Table:
    """One table of a result, in full precision.

    A value the scores leave undefined is NaN (its interval too); ``notes`` say why, one line
    per undefined metric.
    """

    title: str  #: what the table shows, e.g. ``"relative performance (Lerma & Lucas, ...)"``
    rows: Rows  #: each value followed by ``<column> ci low``/``<column> ci high`` if bounded
    notes: tuple[str, ...] = ()
    #: what the intervals can and cannot say (too few images for their coverage), for reading
    caveats: tuple[str, ...] = ()

    def text(self, markdown: bool = False) -> str:
        """The table for reading: each value to the digits its interval supports
        (:func:`metrics.digits.with_intervals`), NaN as ``n/a``, then the notes and caveats."""
        table = format_table(with_intervals(self.rows), markdown=markdown)
        lines = self.notes + self.caveats
        if not lines:
            return table
        bullet = "- " if markdown else ""
        return "\n\n".join([table, "\n".join(bullet + line for line in lines)])

    def csv_rows(self) -> Rows:
        """The rows for a CSV file: every digit, NaN as ``n/a``, and, where a value is not
        defined, a last column ``note`` that says why."""
        rows = not_available(self.rows)
        if self.notes:
            note = "; ".join(self.notes)
            rows = [{**row, "note": note} for row in rows]
        return rows


@dataclass(frozen=True)
class Tables:
    """Every table of a :class:`~metrics.result.EvaluationResult`, built once by its
    ``tables()`` and rendered as CSV, Markdown and text."""

    scores: Table  #: per kind of map and method: average drop, increase in confidence, win %
    relative_performance: Table | None = None  #: every pair of methods (None for one method)
    pairwise: Table | None = None  #: wins, ties and the sign test (None for one method)

    def all(self) -> list[Table]:
        """The tables there are, in the order above."""
        tables = (self.scores, self.relative_performance, self.pairwise)
        return [table for table in tables if table is not None]

    def text(self) -> str:
        """Every table as aligned text, each after its title (the scores' table first, with
        none)."""
        parts = [self.scores.text()]
        for table in self.all()[1:]:
            parts += [table.title, table.text()]
        return "\n\n".join(parts)


def not_available(rows: Sequence[Mapping[str, Any]]) -> Rows:
    """The rows with every NaN (a value that is not defined) written as ``n/a``."""
    return [
        {k: NOT_AVAILABLE if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in rows
    ]


def format_table(rows: Sequence[Mapping[str, Any]], markdown: bool = False) -> str:
    """Rows (dicts with the same keys) as an aligned text table, or a Markdown table; floats
    with 4 significant digits, NaN as ``n/a``."""
    columns = list(rows[0]) if rows else []
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])
    widths = [max(len(c), *(len(r[k]) for r in cells)) for k, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return NOT_AVAILABLE if math.isnan(value) else f"{value:.4g}"
    return str(value)


__all__ = ["Rows", "Table", "Tables", "format_table", "not_available"]
