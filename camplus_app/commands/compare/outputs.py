"""The files of a finished ``camplus compare`` run, from its merged per-image records: the
tables (CSV), the figures, ``unreadable.csv`` and ``report.md``."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

from camplus_app import figures
from camplus_app.datasets import ImageDataset, ImageEntry
from camplus_app.gallery import Gallery, build_galleries
from camplus_app.report import RunFacts, markdown_report
from camplus_app.runs import RunFolder
from metrics.heatmaps import MAPS_FROM
from metrics.records import evaluation_result
from metrics.result import EvaluationResult
from metrics.tables import Tables, not_available

from .scoring import GRAD_CAM_PP
from .settings import Settings

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from camplus_app.zoo import Classifier


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
        classifier: Classifier | None = None,
    ) -> None:
        """``classifier``: the model the run scored, to draw the gallery (none without it)."""
        self.classifier = classifier
        self.folder = folder
        self.settings = settings
        self.entries = entries
        self.categories = categories
        self.rows = rows
        self.records = list(records)

    def result(self) -> EvaluationResult:
        """The per-image scores as the metrics' :class:`EvaluationResult` (tables, formats).

        Raises:
            NothingReadable: no image could be read.
            metrics.records.NoImageAboveThreshold: none passed the threshold.
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
            read,
            settings.methods,
            MAPS_FROM,
            threshold=settings.threshold,
            scores=settings.scores,
            metrics=settings.metrics,
        )

    def alphas(self, key: str = "alphas") -> figures.AlphaHistogram | None:
        """The Grad-CAM++ alphas the maps used (``"alphas"``) or before the stabilizer
        (``"raw alphas"``), merged over the batches; None without Grad-CAM++ or counts."""
        if GRAD_CAM_PP not in self.settings.methods:
            return None
        histogram = figures.AlphaHistogram()
        for record in self.records:
            if key in record:
                histogram.merge(figures.AlphaHistogram.from_json(record[key]))
        return histogram if histogram.total else None

    def galleries(self, result: EvaluationResult) -> list[Gallery]:
        """The gallery's figures (:mod:`camplus_app.gallery`), for two or more methods."""
        clf = self.classifier
        if clf is None or len(result.methods) < 2:
            return []
        dataset = ImageDataset(self.entries, clf.transform)

        def load(position: int) -> Tensor:
            item = dataset[position]
            if item.image is None:  # it was read when scored: the file changed since
                raise ValueError(f"{self.entries[position].path}: {item.error}")
            return item.image

        return build_galleries(
            result,
            clf.model,
            clf.layer,
            load,
            lambda position: self.entries[position].name,
            lambda index: f"{self.categories[index]} ({index})",
            layout=self.settings.layout_spec,
        )

    def write(
        self, result: EvaluationResult, tables: Tables, summary: dict[str, Any], facts: RunFacts
    ) -> None:
        """Every file of the run from its ``tables`` (built once, :meth:`EvaluationResult.tables`):
        the CSV tables in full precision with their intervals (``<column> ci low``/``<column>
        ci high``, seeded by ``--seed``), ``n/a`` and a ``note`` where a value is not defined."""
        folder, entries, categories = self.folder, self.entries, self.categories
        image_rows = [
            {"image": entries[row["index"]].name, **row, "class name": categories[row["target"]]}
            for row in result.image_rows()
        ]
        folder.write_csv("scores.csv", tables.scores.csv_rows())
        folder.write_csv("images.csv", not_available(image_rows))
        if tables.relative_performance is not None:
            folder.write_csv("relative_performance.csv", tables.relative_performance.csv_rows())
        if tables.pairwise is not None:
            folder.write_csv("pairwise.csv", tables.pairwise.csv_rows())
        plots = self.plots(result)
        galleries = self.galleries(result)
        for name, figure in plots.items():  # vector plots: a PNG and a small SVG
            for kind, data in figures.figure_files(figure).items():
                folder.write_bytes(f"{name}.{kind}", data)
        for gallery in galleries:  # raster images: an SVG would only wrap the pixels
            folder.write_bytes(
                f"{gallery.file}.png", figures.figure_files(gallery.figure, ["png"])["png"]
            )
        unreadable = [
            {"position": p, "image": entries[p].path or entries[p].name, "error": row["error"]}
            for row in self.rows
            if "error" in row
            for p in (row["position"],)
        ]
        if unreadable:
            folder.write_csv("unreadable.csv", unreadable)
        report = markdown_report(
            facts, result, tables, summary, [f"{name}.png" for name in plots], unreadable, galleries
        )
        folder.write_text("report.md", report)

    def plots(self, result: EvaluationResult) -> dict[str, Figure]:
        """The run's plots by file stem: per-image relative performance (two or more methods,
        scores that define it) and the Grad-CAM++ alphas (if counted)."""
        plots = {}
        ratios = {
            f"{source} maps": {pair: r.tolist() for pair, r in by_pair.items()}
            for source, by_pair in result.relative_performance_per_image().items()
            if by_pair
        }
        if ratios:
            plots["relative_performance"] = figures.relative_performance_boxplot(
                ratios, seed=self.settings.seed
            )
        alphas = self.alphas()
        if alphas is not None:
            plots["alphas"] = figures.alpha_histogram(alphas, self.alphas("raw alphas"))
        return plots


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
