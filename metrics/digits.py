"""Tables that print each value to the precision its uncertainty supports.

A value with an interval ``[low, high]`` is rounded at the place of the leading digit of the
half-width ``(high - low) / 2``, plus one digit: ``1.2345`` with ``[1.1934, 1.2871]`` (half-width
0.047: hundredths, plus one) prints as ``1.234 [1.193, 1.287]``. A value whose distance to its
reference (1 for a ratio, 0 for a log ratio), interval included, lies within :data:`NOISE` is
``equal``: the scores ``O`` come from float32 models, so such differences are rounding, not a
result.
Files (CSV) keep full precision; only tables for reading are rounded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: Distances to the reference below this are rounding noise: about 80 float32 roundings
#: (eps 1.2e-7), the error of a log-softmax of float32 logits of magnitude 10 to 100.
NOISE = 1e-5
#: Significant digits of a value without an interval (or with a zero-width one).
DIGITS = 4
#: Suffixes of the columns that bound a column ``c``: ``c ci low`` and ``c ci high``.
LOW, HIGH = " ci low", " ci high"
#: What a table shows for a value that is not defined (NaN): a metric the scores leave
#: undefined, or win % of a single method.
NOT_AVAILABLE = "n/a"
#: What each kind of column equals when two methods are equal.
REFERENCES = {"relative performance": 1.0, "log mean": 0.0, "log std": 0.0}


def decimals(half_width: float) -> int:
    """Decimal places that keep the leading digit of ``half_width`` and one more (negative:
    round to tens, hundreds...)."""
    if not half_width > 0 or not math.isfinite(half_width):
        raise ValueError(f"the half-width must be positive and finite, got {half_width}")
    return 1 - math.floor(math.log10(half_width))


def format_estimate(
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    reference: float | None = None,
    noise: float = NOISE,
) -> str:
    """``value [low, high]`` to the precision of the interval, or ``equal (reference)`` when
    the value and its interval lie within ``noise`` of ``reference``.

    Without an interval, or with one of zero width, :data:`DIGITS` significant digits; a NaN
    value (not defined) is :data:`NOT_AVAILABLE`, whatever its interval.
    """
    ends = [v for v in (low, high) if v is not None]
    if len(ends) == 1:
        raise ValueError("give both ends of the interval or neither")
    if math.isnan(value):
        return NOT_AVAILABLE
    if reference is not None and all(abs(v - reference) <= noise for v in (value, *ends)):
        return f"equal ({reference:g})"
    if not ends:
        return _significant(value)
    assert low is not None and high is not None
    if not low <= high:
        raise ValueError(f"the interval [{low}, {high}] has its ends the wrong way round")
    half_width = (high - low) / 2
    if half_width == 0 or not math.isfinite(half_width):
        return f"{_significant(value)} [{_significant(low)}, {_significant(high)}]"
    places = decimals(half_width)
    return f"{_fixed(value, places)} [{_fixed(low, places)}, {_fixed(high, places)}]"


def with_intervals(
    rows: Sequence[Mapping[str, Any]], references: Mapping[str, float] = REFERENCES
) -> list[dict[str, Any]]:
    """Rows for reading: each column ``c`` followed by ``c ci low`` and ``c ci high`` becomes
    one text cell ``value [low, high]`` (:func:`format_estimate`, with ``references[c]``); the
    bounding columns go. Other floats get :data:`DIGITS` significant digits."""
    shown = []
    for row in rows:
        cells: dict[str, Any] = {}
        for column, value in row.items():
            if column.endswith((LOW, HIGH)) and column.rsplit(" ci ", 1)[0] in row:
                continue
            if f"{column}{LOW}" in row and f"{column}{HIGH}" in row:
                cells[column] = format_estimate(
                    value,
                    row[f"{column}{LOW}"],
                    row[f"{column}{HIGH}"],
                    reference=references.get(column),
                )
            elif isinstance(value, float):
                cells[column] = format_estimate(value, reference=references.get(column))
            else:
                cells[column] = value
        shown.append(cells)
    return shown


def _significant(value: float) -> str:
    if math.isnan(value):
        return NOT_AVAILABLE
    return _unsigned_zero(f"{value:.{DIGITS}g}")


def _fixed(value: float, places: int) -> str:
    if places >= 0:
        return _unsigned_zero(f"{value:.{places}f}")
    step = 10.0 ** (-places)
    return _unsigned_zero(f"{round(value / step) * step:.0f}")


def _unsigned_zero(text: str) -> str:
    """``-0.00`` (a small negative rounded to zero) as ``0.00``."""
    if text.startswith("-") and not any(c in "123456789" for c in text.split("e")[0]):
        return text[1:]
    return text


__all__ = [
    "DIGITS",
    "HIGH",
    "LOW",
    "NOISE",
    "NOT_AVAILABLE",
    "REFERENCES",
    "decimals",
    "format_estimate",
    "with_intervals",
]
