"""The scoring loop of ``camplus compare``: this process's batches, decoded by DataLoader
workers, scored by the metrics' :class:`~metrics.BatchScorer`, each batch's record synced to
this process's part file before the next batch."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from camplus_app import figures
from camplus_app.datasets import Batch, ImageDataset, ImageEntry, collate
from camplus_app.parts import PartWriter
from camplus_app.zoo import Classifier
from metrics.records import image_records
from metrics.scoring import BatchScorer

from .settings import Settings, batch_positions

GRAD_CAM_PP = "Grad-CAM++"


@dataclass
class Shard:
    """What one process scores: its batches of the run's images, into its part file."""

    classifier: Classifier
    settings: Settings
    entries: Sequence[ImageEntry]  #: the run's images, by position
    labelled: bool  #: a data set of class folders: each image's label is the class to explain
    batches: list[int]  #: this process's batch numbers
    part: Path  #: its part file
    workers: int
    progress: str | None = None  #: the progress bar's title (None: no bar)

    def positions(self, number: int) -> range:
        return batch_positions(number, self.settings.batch_size, len(self.entries))


def score_shard(shard: Shard) -> int:
    """Score the shard's batches into its part file; returns the images scored."""
    if not shard.batches:
        return 0
    clf, settings = shard.classifier, shard.settings
    scorer = BatchScorer(
        clf.model,
        clf.layer,
        settings.methods,
        threshold=settings.threshold,
        layout=settings.layout_spec,
        scores=settings.scores,
        metrics=settings.metrics,
        seed=settings.seed,
    )
    alphas = AlphaCounter(scorer) if GRAD_CAM_PP in scorer.methods else None
    scorer.on_layer = alphas
    loader = DataLoader(
        ImageDataset(shard.entries, clf.transform),
        batch_sampler=[list(shard.positions(b)) for b in shard.batches],
        num_workers=shard.workers,
        collate_fn=collate,
        pin_memory=clf.device.type == "cuda",
    )
    total = sum(len(shard.positions(b)) for b in shard.batches)
    bar = tqdm(total=total, desc=shard.progress, unit="image", disable=shard.progress is None)
    with bar, PartWriter(shard.part) as writer:
        started = time.perf_counter()
        for number, batch in zip(shard.batches, loader, strict=True):
            record = _batch_record(shard, number, batch, scorer, alphas)
            record["seconds"] = round(time.perf_counter() - started, 4)  # with its decoding
            writer.write(record)
            bar.update(len(batch.positions) + len(batch.failed))
            started = time.perf_counter()
    return total


def _batch_record(
    shard: Shard, number: int, batch: Batch, scorer: BatchScorer, alphas: AlphaCounter | None
) -> dict[str, Any]:
    """One batch's part-file record: per image, its record (:mod:`metrics.records`) or why it
    could not be read."""
    images: list[dict[str, Any]] = [
        {"position": position, "error": error} for position, error in batch.failed
    ]
    if batch.images is not None:
        if alphas is not None:
            alphas.reset()
        scores = scorer(batch.images, _labels(shard, batch.positions), batch.positions)
        images += image_records(scores)
    images.sort(key=lambda row: row["position"])
    record: dict[str, Any] = {
        "batch": number,
        "settings": asdict(shard.settings),  # what the rows depend on: checked on --resume
        "images": images,
    }
    if alphas is not None and alphas.histogram.total:
        record["alphas"] = alphas.histogram.to_json()
        record["raw alphas"] = alphas.raw.to_json()
    return record


def _labels(shard: Shard, positions: Tensor) -> Tensor | None:
    if shard.settings.target is not None:
        return torch.full((len(positions),), shard.settings.target, dtype=torch.long)
    if not shard.labelled:
        return None
    return torch.tensor([shard.entries[p].label for p in positions.tolist()], dtype=torch.long)


class AlphaCounter:
    """``on_layer`` callback: the pre-softmax Grad-CAM++ alphas of a batch (Lerma & Lucas,
    figures 3-4), those the maps used and those of eq. 13 before the stabilizer (their tail),
    each counted in an :class:`~camplus_app.figures.AlphaHistogram`."""

    def __init__(self, scorer: BatchScorer) -> None:
        self.method = scorer.methods[GRAD_CAM_PP]
        self.reset()

    def reset(self) -> None:
        self.histogram = figures.AlphaHistogram()
        self.raw = figures.AlphaHistogram()

    def __call__(self, source: str, index: Tensor, activation: Tensor, gradient: Tensor) -> None:
        if source == "pre-softmax":
            self.histogram.add(self.method.alphas(activation, gradient))
            self.raw.add(self.method.raw_alphas(activation, gradient))


__all__ = ["GRAD_CAM_PP", "AlphaCounter", "Shard", "score_shard"]
