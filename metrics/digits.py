"""Tables that print each value to the precision its uncertainty supports.

A value with an interval ``[low, high]`` is rounded at the place of the leading digit of the
half-width ``(high - low) / 2``, plus one digit: ``1.2345`` with ``[1.1934, 1.2871]`` (half-width
0.047: hundredths, plus one) prints as ``1.234 [1.193, 1.287]``. A value whose distance to its
reference (1 for a ratio, 0 for a log ratio), interval included, lies within :data:`NOISE` is
``equal``: the scores ``O`` come from float32 models, so such differences are rounding, not a
result.

Printing never claims more than the numbers hold: a zero-width interval (every image gave the
same value) prints as ``value (no spread)``, not as the certainty ``[v, v]``; a NaN interval (no
interval: one image, or a statistic whose coverage is not there, see
:data:`metrics.intervals.COVERAGE_FROM`) prints the value alone; and a number that is not
exactly the reference never prints as the reference (``1.00034`` is not ``1``, ``0.00003`` is
not ``0.00``): it gets the digits that tell them apart.
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
#: What a zero-width interval prints after its value: every image gave the same value, which is
#: no interval (a few images alike leave the true value open), not certainty.
NO_SPREAD = "(no spread)"
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

    Without an interval, or with NaN ends (none), :data:`DIGITS` significant digits; with a
    zero-width one, those digits and :data:`NO_SPREAD`; a NaN value (not defined) is
    :data:`NOT_AVAILABLE`, whatever its interval. A number other than ``reference`` never
    prints as it.
    """
    ends = [v for v in (low, high) if v is not None]
    if len(ends) == 1:
        raise ValueError("give both ends of the interval or neither")
    if math.isnan(value):
        return NOT_AVAILABLE
    if any(math.isnan(v) for v in ends):
        if not all(math.isnan(v) for v in ends):
            raise ValueError(f"one end of the interval [{low}, {high}] is NaN, the other not")
        ends = []
    if reference is not None and all(abs(v - reference) <= noise for v in (value, *ends)):
        return f"equal ({reference:g})"
    if not ends:
        return _significant(value, reference)
    assert low is not None and high is not None
    if not low <= high:
        raise ValueError(f"the interval [{low}, {high}] has its ends the wrong way round")
    half_width = (high - low) / 2
    if half_width == 0:
        return f"{_significant(value, reference)} {NO_SPREAD}"
    if not math.isfinite(half_width):
        raise ValueError(f"the interval [{low}, {high}] is not finite")
    places = decimals(half_width)
    shown = (_fixed(v, places, reference) for v in (value, low, high))
    return "{} [{}, {}]".format(*shown)


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


def _significant(value: float, reference: float | None = None) -> str:
    """:data:`DIGITS` significant digits, more where fewer would print ``reference``."""
    digits = DIGITS
    while True:
        text = _unsigned_zero(f"{value:.{digits}g}")
        if not _looks_like(text, value, reference) or digits >= 17:
            return text
        digits += 1


def _fixed(value: float, places: int, reference: float | None = None) -> str:
    """``places`` decimals (negative: tens, hundreds...), more where fewer would print
    ``reference``."""
    while True:
        if places >= 0:
            text = _unsigned_zero(f"{value:.{places}f}")
        else:
            step = 10.0 ** (-places)
            text = _unsigned_zero(f"{round(value / step) * step:.0f}")
        if not _looks_like(text, value, reference) or places >= 17:
            return text
        places += 1


def _looks_like(text: str, value: float, reference: float | None) -> bool:
    """Whether ``text`` reads as ``reference`` although ``value`` is not it."""
    return reference is not None and value != reference and float(text) == reference


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
    "NO_SPREAD",
    "REFERENCES",
    "decimals",
    "format_estimate",
    "with_intervals",
]
