"""The files of a finished ``camplus compare`` run, from its merged per-image records: the
tables (CSV), the figures, ``unreadable.csv`` and ``report.md``."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

from camplus_app import figures
from camplus_app.datasets import ImageEntry
from camplus_app.report import RunFacts, markdown_report
from camplus_app.runs import RunFolder
from metrics.heatmaps import MAPS_FROM
from metrics.records import evaluation_result
from metrics.result import EvaluationResult

from .scoring import GRAD_CAM_PP
from .settings import Settings


class NothingReadable(ValueError):
    """Not one image of the run could be decoded."""


class Outputs:
    """The files of a finished run, from the merged per-image rows."""

    def __init__(
        self,
        folder: RunFolder,
        settings: Settings,
        entries: Sequence[ImageEntry],
        categories: Sequence[str],
        rows: list[dict[str, Any]],
        records: Iterable[dict[str, Any]],
    ) -> None:
        self.folder = folder
        self.settings = settings
        self.entries = entries
        self.categories = categories
        self.rows = rows
        self.records = list(records)

    def result(self) -> EvaluationResult:
        """The per-image scores as the metrics' :class:`EvaluationResult` (tables, formats).

        Raises:
            ValueError: no image could be read, or none passed the threshold.
        """
        read = [row for row in self.rows if "error" not in row]
        if not read:
            first = self.rows[0]
            raise NothingReadable(
                f"none of the {len(self.rows)} images could be read (the first: "
                f"{self.entries[first['position']].path}: {first['error']})"
            )
        settings = self.settings
        return evaluation_result(
            read, settings.methods, MAPS_FROM, threshold=settings.threshold, scores=settings.scores
        )

    def alphas(self) -> figures.AlphaHistogram | None:
        if GRAD_CAM_PP not in self.settings.methods:
            return None
        histogram = figures.AlphaHistogram()
        for record in self.records:
            if "alphas" in record:
                histogram.merge(figures.AlphaHistogram.from_json(record["alphas"]))
        return histogram

    def write(self, result: EvaluationResult, summary: dict[str, Any], facts: RunFacts) -> None:
        folder, entries, categories = self.folder, self.entries, self.categories
        image_rows = [
            {"image": entries[row["index"]].name, **row, "class name": categories[row["target"]]}
            for row in result.image_rows()
        ]
        folder.write_csv("scores.csv", result.summary())
        folder.write_csv("images.csv", image_rows)
        pictures = {}
        if len(result.methods) > 1:
            folder.write_csv("relative_performance.csv", result.relative_performance())
            boxplot = figures.relative_performance_boxplot(
                {
                    f"{source} maps": {pair: r.tolist() for pair, r in ratios.items()}
                    for source, ratios in result.relative_performance_per_image().items()
                }
            )
            pictures["relative_performance.png"] = boxplot
        alphas = self.alphas()
        if alphas is not None and alphas.total:
            pictures["alphas.png"] = figures.alpha_histogram(alphas)
        for name, figure in pictures.items():
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=100)
            folder.write_bytes(name, buffer.getvalue())
        unreadable = [
            {"position": p, "image": entries[p].path or entries[p].name, "error": row["error"]}
            for row in self.rows
            if "error" in row
            for p in (row["position"],)
        ]
        if unreadable:
            folder.write_csv("unreadable.csv", unreadable)
        report = markdown_report(facts, result, summary, list(pictures), unreadable)
        folder.write_text("report.md", report)


def counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many images the run has, could not read, left below the threshold, scored."""
    unreadable = sum("error" in row for row in rows)
    kept = sum(bool(row.get("kept")) for row in rows)
    return {
        "images": len(rows),
        "unreadable": unreadable,
        "below threshold": len(rows) - unreadable - kept,
        "scored": kept,
    }


def summary_line(counts: dict[str, int], scored_now: int, elapsed: float, world: int) -> str:
    """The line printed after the tables: what was scored, and this attempt's speed."""
    parts = [f"{counts['scored']} of {counts['images']} images scored"]
    if counts["below threshold"]:
        parts.append(f"{counts['below threshold']} below the threshold")
    if counts["unreadable"]:
        parts.append(f"{counts['unreadable']} unreadable (see unreadable.csv)")
    if not scored_now:
        return "; ".join(parts) + "; nothing was left to score"
    processes = f" on {world} processes" if world > 1 else ""
    rate = scored_now / elapsed if elapsed > 0 else math.inf
    timing = f"{scored_now} images in {elapsed:.1f} s ({rate:.2f} images/s{processes})"
    return "; ".join(parts) + f"; this attempt: {timing}"


__all__ = ["NothingReadable", "Outputs", "counts", "summary_line"]
