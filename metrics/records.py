"""Per-image results change shape once: a batch's scores become records, one per image, and
records become the :class:`~metrics.result.EvaluationResult`.

A record is plain data (JSON as it is), so the same records serve :func:`metrics.evaluate_methods`
(gathered from several processes) and ``camplus compare`` (appended to its part files and read
back, possibly by a later process that resumes the run)::

    {"position": 12, "target": 281, "Y": 0.93, "log Y": -0.07, "kept": true,
     "O": {"pre-softmax": {"Grad-CAM": 0.88, ...}, ...}, "log O": {...},
     "dead zone mass": {...}}

``O``, ``log O`` and ``dead zone mass`` (when a region was given) are there only for an image
whose ``Y`` passed the threshold (``kept``), as are the chosen perturbation metrics
(:mod:`metrics.choices`), each under its column (``"deletion AUC": {"pre-softmax": {...}}``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .choices import PAPERS, chosen
from .confidence import ScoreKind, score_kind
from .heatmaps import MapsFrom
from .result import EvaluationResult, PerMethod, map_per_method
from .scoring import BatchScores

#: A record's per-kind-of-map, per-method values, with the result's field for each.
PER_METHOD_FIELDS = {"O": "o", "log O": "log_o", "dead zone mass": "dead_zone"}

Record = dict[str, Any]


class NoImageAboveThreshold(ValueError):
    """Every image's score ``Y`` is at or below the threshold: there is nothing to evaluate."""


def image_records(scores: BatchScores) -> list[Record]:
    """One record per image of the batch, in the batch's order."""
    scores = scores.cpu()
    per_method = {
        key: map_per_method(value, Tensor.tolist)
        for key, name in PER_METHOD_FIELDS.items()
        if (value := getattr(scores, name)) is not None
    }
    per_method.update({key: map_per_method(v, Tensor.tolist) for key, v in scores.chosen.items()})
    records = []
    kept_rank = 0
    columns = zip(
        scores.index.tolist(),
        scores.target.tolist(),
        scores.y.tolist(),
        scores.log_y.tolist(),
        scores.kept.tolist(),
        strict=True,
    )
    for position, target, y, log_y, kept in columns:
        record: Record = {"position": position, "target": target, "Y": y, "log Y": log_y}
        record["kept"] = kept
        if kept:
            for key, values in per_method.items():
                record[key] = {
                    source: {method: v[kept_rank] for method, v in by_method.items()}
                    for source, by_method in values.items()
                }
            kept_rank += 1
        records.append(record)
    return records


def evaluation_result(
    records: Iterable[Mapping[str, Any]],
    methods: Sequence[str],
    maps_from: Sequence[MapsFrom],
    *,
    threshold: float | None = None,
    scores: ScoreKind = "softmax",
    metrics: Sequence[str] = (PAPERS,),
) -> EvaluationResult:
    """The result of the images' records (every image seen, in the data's order); ``scores``
    says how Y and O were scored, ``metrics`` which were chosen (:mod:`metrics.choices`).

    Raises:
        ValueError: no records, or an unknown kind of scores.
        NoImageAboveThreshold: no image passed the threshold.
    """
    scores = score_kind(scores)
    records = list(records)
    if not records:
        raise ValueError("the data holds no images: nothing to evaluate")
    kept = [record for record in records if record["kept"]]
    if not kept:
        raise NoImageAboveThreshold(
            f"no image has a score Y above the threshold {threshold}: nothing to evaluate"
        )

    def column(key: str, dtype: torch.dtype = torch.float64) -> Tensor:
        return torch.tensor([record[key] for record in kept], dtype=dtype)

    def per_method(key: str) -> PerMethod:
        return {
            source: {
                method: torch.tensor(
                    [record[key][source][method] for record in kept], dtype=torch.float64
                )
                for method in methods
            }
            for source in maps_from
        }

    return EvaluationResult(
        methods=list(methods),
        maps_from=list(maps_from),
        index=column("position", torch.long),
        target=column("target", torch.long),
        y=column("Y"),
        log_y=column("log Y"),
        o=per_method("O"),
        log_o=per_method("log O"),
        dead_zone=per_method("dead zone mass") if "dead zone mass" in kept[0] else None,
        threshold=threshold,
        images_seen=len(records),
        scores=scores,
        chosen={choice.column: per_method(choice.column) for choice in chosen(metrics)},
    )


__all__ = [
    "PER_METHOD_FIELDS",
    "NoImageAboveThreshold",
    "Record",
    "evaluation_result",
    "image_records",
]
