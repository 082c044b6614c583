"""Average drop, increase in confidence, win %, relative performance, dead-zone mass, deletion
and insertion AUC and ROAD as Quantus metrics. Each states its formula;
:class:`metrics.quantus_adapter.CamMetric` does the rest (arguments, tensors on the model's
device, explanation maps, scores, threshold).

Importing this module lists the nine metrics in ``quantus.available_metrics()`` under
"Faithfulness" (:func:`metrics.quantus_registry.register_quantus_metrics`, idempotent).

The formulas are those of :mod:`metrics.functional`. Average drop, increase in confidence and
win % were proposed with Grad-CAM++ by Chattopadhay et al. (a course report by Singh, Harithas,
Khan & Hadi, without year or venue, reimplements the first two, its section 4.2); relative
performance is Lerma & Lucas' (eq. 16-17) and the dead-zone mass Taimeskhanov et al.'s (eq. 7).
Deletion and insertion are Petsiuk et al.'s, ROAD is Rong et al.'s;
their protocols are those of :mod:`metrics.perturbation`.

References:
- Chattopadhay, Sarkar, Howlader & Balasubramanian (2018), "Grad-CAM++: Generalized
  Gradient-based Visual Explanations for Deep Convolutional Networks", WACV 2018,
  arXiv:1710.11063.
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD
  2024, arXiv:2404.01964.
- Petsiuk, Das & Saenko (2018), "RISE: Randomized Input Sampling for Explanation of Black-box
  Models", BMVC 2018, arXiv:1806.07421.
- Rong, Leemann, Borisov, Kasneci & Kasneci (2022), "A Consistent and Efficient Evaluation
  Strategy for Attribution Methods", ICML 2022, arXiv:2202.00449.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from quantus.helpers.enums import ScoreDirection
from torch import Tensor

from . import functional, perturbation
from .confidence import cam_dead_zone_mass
from .imputation import ROAD_NOISE
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


#: A substrate: one ``(C, H, W)`` tensor for all images, or a function of the batch's inputs.
Substrate = Tensor | Callable[[Tensor], Tensor] | None


class _PixelCurve(CamMetric):
    """Deletion or insertion (Petsiuk et al.): the AUC of the target's score per image, as
    :func:`metrics.perturbation.perturbation_curve` computes it (one forward per step).

    Args:
        steps: The number of steps (default 100).
        substrate: What deleted pixels become, or what pixels are inserted into: a ``(C, H, W)``
            tensor, or a function of the ``(N, C, H, W)`` inputs; default zeros (deletion) or
            their Gaussian blur (insertion, :data:`metrics.perturbation.BLUR_SIGMA`).
        kwargs: See :class:`CamMetric`.
    """

    insert: ClassVar[bool]

    def __init__(self, steps: int = 100, substrate: Substrate = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.steps = steps
        self.substrate = substrate

    def score(self, batch: MetricBatch) -> Tensor:
        substrate = self.substrate(batch.x) if callable(self.substrate) else self.substrate
        curve, fraction = perturbation.perturbation_curve(
            batch.forward,
            batch.x,
            batch.maps,
            batch.target,
            steps=self.steps,
            substrate=substrate,
            insert=self.insert,
            scores=self.scores,
        )
        return perturbation.trapezoid(curve, fraction)


class DeletionAUC(_PixelCurve):
    """Deletion AUC (Petsiuk et al.): lower is better, the score falls fast as the most
    relevant pixels go. See :class:`_PixelCurve` for the arguments."""

    name = "Deletion AUC"
    score_direction = ScoreDirection.LOWER
    insert = False


class InsertionAUC(_PixelCurve):
    """Insertion AUC (Petsiuk et al.): higher is better, the score rises fast as the most
    relevant pixels come back. See :class:`_PixelCurve` for the arguments."""

    name = "Insertion AUC"
    score_direction = ScoreDirection.HIGHER
    insert = True


class _Road(CamMetric):
    """ROAD (Rong et al.): per image, the mean over ``percentiles`` of the target's score after
    removing that share of the pixels and imputing them with noisy linear imputation
    (:func:`metrics.perturbation.road_curve`).

    Args:
        percentiles: Percentages of pixels removed (default 10, 20, ..., 90).
        noise: Standard deviation of the imputation's noise, in the units of ``x_batch``.
        seed: Seed of the noise (each batch starts from it).
        kwargs: See :class:`CamMetric`. With ``preprocess`` the imputed images are clipped to
            [0, 1].
    """

    order: ClassVar[perturbation.Order]

    def __init__(
        self,
        percentiles: Sequence[float] = perturbation.ROAD_PERCENTILES,
        noise: float = ROAD_NOISE,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.percentiles = tuple(percentiles)
        self.noise = noise
        self.seed = seed

    def score(self, batch: MetricBatch) -> Tensor:
        curve = perturbation.road_curve(
            batch.forward,
            batch.x,
            batch.maps,
            batch.target,
            order=self.order,
            percentiles=self.percentiles,
            noise=self.noise,
            seed=self.seed,
            scores=self.scores,
            clip=None if self.preprocess is None else (0.0, 1.0),
        )
        return curve.mean(dim=-1)


class RoadMostRelevantFirst(_Road):
    """ROAD removing the most relevant pixels first (MoRF): lower is better."""

    name = "ROAD Most Relevant First"
    score_direction = ScoreDirection.LOWER
    order = "most"


class RoadLeastRelevantFirst(_Road):
    """ROAD removing the least relevant pixels first (LeRF): higher is better."""

    name = "ROAD Least Relevant First"
    score_direction = ScoreDirection.HIGHER
    order = "least"


#: The metrics by display name, as registered in ``quantus.available_metrics()``.
QUANTUS_METRICS: dict[str, type[CamMetric]] = {
    cls.name: cls
    for cls in (
        AverageDrop,
        IncreaseInConfidence,
        WinPercentage,
        RelativePerformance,
        DeadZoneMass,
        DeletionAUC,
        InsertionAUC,
        RoadMostRelevantFirst,
        RoadLeastRelevantFirst,
    )
}
register_quantus_metrics(QUANTUS_METRICS)

__all__ = [
    "QUANTUS_METRICS",
    "AverageDrop",
    "DeadZoneMass",
    "DeletionAUC",
    "IncreaseInConfidence",
    "InsertionAUC",
    "RelativePerformance",
    "RoadLeastRelevantFirst",
    "RoadMostRelevantFirst",
    "WinPercentage",
]
