"""Average drop, increase in confidence, win %, relative performance and dead-zone mass as
Quantus metrics. Each states its formula; :class:`metrics.quantus_adapter.CamMetric` does the
rest (arguments, tensors on the model's device, explanation maps, scores, threshold).

Importing this module lists the five metrics in ``quantus.available_metrics()`` under
"Faithfulness" (:func:`metrics.quantus_registry.register_quantus_metrics`, idempotent).

The formulas are those of :mod:`metrics.functional`. Average drop, increase in confidence and
win % were proposed with Grad-CAM++ by Chattopadhay et al. (a course report by Singh, Harithas,
Khan & Hadi, without year or venue, reimplements the first two, its section 4.2); relative
performance is Lerma & Lucas' (eq. 16-17) and the dead-zone mass Taimeskhanov et al.'s (eq. 7).

References:
- Chattopadhay, Sarkar, Howlader & Balasubramanian (2018), "Grad-CAM++: Generalized
  Gradient-based Visual Explanations for Deep Convolutional Networks", WACV 2018,
  arXiv:1710.11063.
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD
  2024, arXiv:2404.01964.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from quantus.helpers.enums import ScoreDirection
from torch import Tensor

from . import functional
from .confidence import cam_dead_zone_mass
from .quantus_adapter import CamMetric, MetricBatch, Rival
from .quantus_registry import register_quantus_metrics


class AverageDrop(CamMetric):
    """Average Drop %: ``100 max(0, Y - O) / Y`` per image, averaged (Chattopadhay et al.).

    Lower is better. The per-image scores are percentages; the aggregate is their mean.
    """

    name = "Average Drop"
    score_direction = ScoreDirection.LOWER
    defined_by = "average drop"

    def score(self, batch: MetricBatch) -> Tensor:
        return functional.average_drop(batch.y.value, batch.o.value, reduction="none")


class IncreaseInConfidence(CamMetric):
    """% Increase in Confidence: ``100 1[Y < O]`` per image, averaged (Chattopadhay et al.).

    Higher is better.
    """

    name = "Increase in Confidence"
    score_direction = ScoreDirection.HIGHER

    def score(self, batch: MetricBatch) -> Tensor:
        return functional.increase_in_confidence(batch.y.value, batch.o.value, reduction="none")


class WinPercentage(CamMetric):
    """Win %: the share of images on which this method's map drops the score least among
    itself and ``against`` (Chattopadhay et al.). Higher is better.

    Methods within ``rtol`` of the best score split the image's win equally (see
    :func:`metrics.functional.win_percentage`), so with the same ``against`` list for every
    method the percentages add up to 100.

    Args:
        against: The other methods: names, explained by the call's ``explain_func`` with
            ``method=name`` (inside ``quantus.evaluate``, with the same function for all
            methods, list all of them: the scored method itself is skipped), or explain
            functions of their own.
        rtol: Scores within this relative distance of the best tie.
        kwargs: See :class:`CamMetric`.
    """

    name = "Win Percentage"
    score_direction = ScoreDirection.HIGHER

    def __init__(
        self, against: Sequence[Rival], rtol: float = functional.TIE_RTOL, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.rtol = rtol
        if isinstance(against, str) or not isinstance(against, Sequence):
            raise TypeError("against must be a sequence of method names or explain functions")
        self.against = list(against)

    def score(self, batch: MetricBatch) -> Tensor:
        others = [self.rival_scores(batch, r).value for r in self.against if not self.is_own(r)]
        if not others:
            raise ValueError(f"{self.name} needs at least one other method in 'against'")
        scores = torch.stack([batch.o.value, *others])
        return functional.win_percentage(scores, "none", self.rtol)[0]


class RelativePerformance(CamMetric):
    """Relative performance of this method ``M'`` vs ``baseline`` ``M`` (Lerma & Lucas, eq. 16-17).

    The per-image scores are the log relative performance ``log(O'_i / O_i)``, computed in float64
    from ``log_softmax``; the default aggregate is their geometric-mean ratio ``exp(mean
    log(O'/O))`` (Lerma & Lucas, table 1). ``aggregate_func=np.mean`` / ``np.std`` give the mean and
    std of table 2. Higher (above 1) means ``M'`` beats ``M``.

    Args:
        baseline: The method ``M``: a name, explained by the call's ``explain_func`` with
            ``method=baseline``, or an explain function.
        kwargs: See :class:`CamMetric`.
    """

    name = "Relative Performance"
    score_direction = ScoreDirection.HIGHER
    defined_by = "relative performance"

    @staticmethod
    def aggregate(scores: Sequence[float]) -> float:
        """Lerma & Lucas, eq. 17, from per-image log ratios (NaN for thresholded images is
        skipped)."""
        return float(np.exp(np.nanmean(scores)))

    def __init__(self, baseline: Rival, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.baseline = baseline

    def score(self, batch: MetricBatch) -> Tensor:
        base = self.rival_scores(batch, self.baseline)
        return functional.relative_performance(batch.o.log, base.log).log_ratio


class DeadZoneMass(CamMetric):
    """Dead-zone mass ``||L on the unseen region||_2 / ||L||_2`` per image (Taimeskhanov et al.,
    eq. 7).

    ``L`` is the map upsampled to the mask and min-max normalised. Lower is better; Taimeskhanov et
    al.'s table 1 gives ``100 mu``. No model output is used.

    Args:
        unseen: Boolean mask of the region the model cannot see, ``(H, W)`` or one per image,
            e.g. :func:`captum_camplus.masking.bottom_rows`. Without it, the call's ``s_batch``
            (non-zero = unseen) is used.
        kwargs: See :class:`CamMetric`.
    """

    name = "Dead Zone Mass"
    score_direction = ScoreDirection.LOWER

    def __init__(self, unseen: Tensor | np.ndarray | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.unseen = None if unseen is None else torch.as_tensor(unseen)

    def score(self, batch: MetricBatch) -> Tensor:
        region = batch.region if self.unseen is None else self.unseen.to(batch.x.device)
        if region is None:
            raise ValueError(f"{self.name} needs the unseen region: pass unseen= or s_batch=")
        return cam_dead_zone_mass(batch.maps, region, reduction="none")


#: The metrics by display name, as registered in ``quantus.available_metrics()``.
QUANTUS_METRICS: dict[str, type[CamMetric]] = {
    cls.name: cls
    for cls in (
        AverageDrop,
        IncreaseInConfidence,
        WinPercentage,
        RelativePerformance,
        DeadZoneMass,
    )
}
register_quantus_metrics(QUANTUS_METRICS)

__all__ = [
    "QUANTUS_METRICS",
    "AverageDrop",
    "DeadZoneMass",
    "IncreaseInConfidence",
    "RelativePerformance",
    "WinPercentage",
]
