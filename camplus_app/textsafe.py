"""Text that every reader takes as it is: CSV cells no spreadsheet runs as a formula, and file
names that are not valid UTF-8 written losslessly.

CSV cells that a spreadsheet would read as a formula (starting with ``=``, ``+``, ``-``, ``@``,
a tab or a carriage return) get a leading single quote, as OWASP recommends (negative numbers
stay numbers). Text that holds file names which are not valid UTF-8 (Python keeps their bytes
as lone surrogates) is written with each such byte as ``\\xHH``, in CSV, Markdown and printed
messages; JSON keeps them as ``\\udcHH`` escapes, which read back to the same name.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from typing import Any


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """Rows (dicts with the same keys) as CSV text with a header line, every cell
    :func:`spreadsheet_safe`."""
    buffer = io.StringIO()
    fields = list(rows[0]) if rows else []
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([spreadsheet_safe(name) for name in fields])
    writer.writerows([spreadsheet_safe(row[name]) for name in fields] for row in rows)
    return buffer.getvalue()


#: What a spreadsheet reads as the start of a formula (OWASP, "CSV Injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell that no spreadsheet runs as a formula: text starting with ``=``, ``+``, ``-``,
    ``@``, a tab or a carriage return gets a leading single quote, as OWASP recommends;
    numbers, negative ones included, stay numbers; undecodable file-name bytes become
    ``\\xHH`` (:func:`printable`)."""
    if value is None or isinstance(value, bool):
        return value
    text = printable(str(value))
    if text.startswith(_FORMULA_START) and not _NUMBER.fullmatch(text):
        return "'" + text
    return value if isinstance(value, (int, float)) else text


def printable(text: str) -> str:
    """``text`` with the bytes of an undecodable file name (kept by Python as lone surrogates,
    ``os.fsdecode``) written as ``\\xHH``: lossless, and valid UTF-8 to write or print."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that are not escaped bytes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


__all__ = ["csv_text", "printable", "spreadsheet_safe"]
