"""A run's part files: its streaming results, appended as they come and read back whole.

Each process of a run appends to its own part file (``parts/<attempt>-rank<r>.jsonl``), one JSON
line per batch, flushed and synced to disk as each batch ends: a crash or ``kill -9`` loses at
most the batch being written, whose cut-off line is recognised and dropped on reading.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from camplus_app.runs import RunFolderError, guarded_write

PARTS = "parts"


class PartWriter:
    """An append-only JSON-lines file: one record per line, on disk when :meth:`write` returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] = guarded_write(path, lambda: path.open("a", encoding="utf-8"))

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"

        def append() -> None:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())

        guarded_write(self.path, append)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def part_name(attempt: int, rank: int) -> str:
    """The part file of one process of one attempt of a run."""
    return f"{PARTS}/{attempt:03d}-rank{rank}.jsonl"


def read_parts(folder: Path) -> Iterator[dict[str, Any]]:
    """Every complete record of every part file in ``folder``, in file order
    (:func:`read_located_parts` without the places)."""
    for _, record in read_located_parts(folder):
        yield record


def read_located_parts(folder: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every complete record of every part file in ``folder``, in file order, with where it is
    (``"<folder>/parts/001-rank0.jsonl, line 3"``, for messages).

    A last line without its newline (a write cut off by a crash) is dropped; any other line
    that is not a JSON object means the file was damaged and raises :class:`RunFolderError`.
    """
    for path in sorted((folder / PARTS).glob("*.jsonl")):
        with path.open("rb") as file:  # bytes: a line that is not UTF-8 is damaged, not fatal
            for number, line in enumerate(file, start=1):
                if not line.endswith(b"\n"):
                    break  # a write cut off by a crash: that batch is scored again
                try:
                    record = json.loads(line)
                except ValueError as error:
                    raise RunFolderError(
                        f"{path}, line {number}, is damaged ({error}); move the folder aside "
                        "and start a new run"
                    ) from error
                if not isinstance(record, dict):
                    raise RunFolderError(
                        f"{path}, line {number}, is damaged (a {type(record).__name__}, not a "
                        "record); move the folder aside and start a new run"
                    )
                yield f"{path}, line {number}", record


__all__ = ["PARTS", "PartWriter", "part_name", "read_located_parts", "read_parts"]
