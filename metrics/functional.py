"""The metrics' formulas on tensors of scores and maps: no model, no Quantus.

Notation (Lerma & Lucas, section 4; Chattopadhay et al.): for image ``i`` and the explained
class ``c``, ``Y_i`` is the model's score of ``c`` on the image and ``O_i`` its score on the
explanation map ``E_i = L_i (.) I_i``. Every function works on the tensors' device and returns
float64.

``reduction="none"`` returns one value per image (per method for :func:`win_percentage`);
``"mean"`` returns the dataset value the papers report.

References:
- Chattopadhay, Sarkar, Howlader & Balasubramanian (2018), "Grad-CAM++: Generalized
  Gradient-based Visual Explanations for Deep Convolutional Networks", WACV 2018,
  arXiv:1710.11063, https://arxiv.org/abs/1710.11063: Average Drop %, % Increase in Confidence
  and Win %.
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838, https://arxiv.org/abs/2205.10838: relative performance (eq. 15-17).
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD,
  arXiv:2404.01964, https://arxiv.org/abs/2404.01964: dead-zone mass.
- Singh, Harithas, Khan & Hadi, "Grad-CAM++: generalized gradient-based visual explanations for
  deep convolutional networks", a course report that reimplements the metrics of Chattopadhay
  et al. (its section 4.2).

Uncertainty: :func:`score_intervals`, :func:`relative_performance_intervals` and
:func:`compare_pair` give 95 % paired bootstrap (BCa) intervals of the dataset values
(:mod:`metrics.intervals`); with the same seed every one of them resamples the same images.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .intervals import LEVEL, RESAMPLES, Interval, paired_bootstrap, sign_test

Reduction = Literal["mean", "none"]

#: Relative tolerance within which two scores ``O`` tie (win %, pairwise comparisons): float32
#: noise must not decide between maps that are equal in exact arithmetic (Grad-CAM and HiResCAM
#: under global average pooling).
TIE_RTOL = 1e-4


def average_drop(y: Tensor, o: Tensor, reduction: Reduction = "mean") -> Tensor:
    """Average Drop %: ``100/N sum_i max(0, Y_i - O_i) / Y_i``, lower is better
    (Chattopadhay et al. 2018).

    The drop is relative to ``Y``, so the scores must be non-negative (probabilities, the
    default of the papers). An image with ``Y_i = 0`` has a drop of 0: its score cannot fall.

    Raises:
        ValueError: for scores of different shapes, NaN/inf or negative scores (raw logits).
    """
    y, o = _scores(y, "Y"), _scores(o, "O", like=y)
    if bool(((y < 0) | (o < 0)).any()):
        raise ValueError(
            "average drop is a relative drop of non-negative scores such as softmax "
            "probabilities, but got negative scores (raw logits?): use softmax scores"
        )
    drop = (y - o).clamp(min=0) / torch.where(y > 0, y, torch.ones_like(y))
    return _reduce(100 * drop, reduction)


def increase_in_confidence(y: Tensor, o: Tensor, reduction: Reduction = "mean") -> Tensor:
    """% Increase in Confidence: ``100/N sum_i 1[Y_i < O_i]``, higher is better
    (Chattopadhay et al. 2018)."""
    y, o = _scores(y, "Y"), _scores(o, "O", like=y)
    return _reduce(100 * (y < o).to(torch.float64), reduction)


def win_percentage(o: Tensor, reduction: Reduction = "mean", rtol: float = TIE_RTOL) -> Tensor:
    """Win % (Chattopadhay et al. 2018): the share of images on which each method's explanation
    map drops the score least.

    ``o[m, i]`` is ``O_i`` for method ``m``. As all methods share ``Y_i``, the smallest drop
    ``(Y_i - O_i) / Y_i`` is the largest ``O_i``; the drop is not clamped at 0 here, so when
    several maps raise the score, the one raising it most wins.

    Tie rule: the ``k`` methods whose ``O_i`` lies within ``rtol`` (relative) of the largest
    each get ``1/k`` of that image's win, so the percentages of all methods add up to 100. The
    default :data:`TIE_RTOL` keeps float32 noise from deciding between maps that are equal in
    exact arithmetic (Grad-CAM and HiResCAM under global average pooling); ``rtol=0`` counts
    exact ties only.

    Returns:
        ``(M,)`` percentages, or ``(M, N)`` per-image shares in percent with ``"none"``.

    Raises:
        ValueError: for fewer than two methods, a non-2-D tensor, NaN/inf scores or a negative
            ``rtol``.
    """
    if o.dim() != 2 or o.shape[0] < 2:
        raise ValueError(
            f"win percentage compares two or more methods: pass scores of shape (methods, "
            f"images) with at least two methods, got shape {tuple(o.shape)}"
        )
    if rtol < 0:
        raise ValueError(f"rtol must be non-negative, got {rtol}")
    o = _scores(o.flatten(), "O").view_as(o)
    best = o.amax(dim=0, keepdim=True)
    winners = best - o <= rtol * best.abs()
    share = winners.to(torch.float64) / winners.sum(dim=0, keepdim=True)
    return _reduce(100 * share, reduction, dim=1)


class RelativePerformanceStats(NamedTuple):
    """Relative performance of a method ``M'`` against ``M`` (Lerma & Lucas, eq. 15-17)."""

    geometric_mean: Tensor  #: ``exp(mean_i log(O'_i / O_i))``, Lerma & Lucas, eq. 17 (table 1)
    log_mean: Tensor  #: mean of the log relative performance (table 2)
    log_std: Tensor  #: population standard deviation of the same (table 2; 0 for one image)
    log_ratio: Tensor  #: ``log(O'_i / O_i)`` per image


def relative_performance(log_o_new: Tensor, log_o_base: Tensor) -> RelativePerformanceStats:
    """Relative performance of ``M'`` vs ``M`` from log scores ``log O'_i`` and ``log O_i``.

    Computed in float64 log space, so scores far below the float range (a softmax of 1e-30 and
    less, from ``log_softmax``) give exact ratios instead of 0/0.

    Raises:
        ValueError: for a NaN log score, an infinite one (a score of 0 or below), tensors of
            different shapes, or no images.
    """
    new, base = _scores(log_o_new, "log O'"), _scores(log_o_base, "log O", like=log_o_new)
    if new.numel() == 0:
        raise ValueError("relative performance needs at least one image, got none")
    log_ratio = new - base
    log_mean = log_ratio.mean()
    log_std = log_ratio.std(correction=0)
    return RelativePerformanceStats(log_mean.exp(), log_mean, log_std, log_ratio)


def dead_zone_mass(maps: Tensor, unseen: Tensor, reduction: Reduction = "mean") -> Tensor:
    """Dead-zone mass ``mu(L) = ||L on the unseen region||_2 / ||L||_2`` (eq. 7).

    Lower is better: a map should put nothing where the model cannot see. An all-zero map has
    no mass anywhere and gets 0.

    Args:
        maps: ``(N, C, *spatial)`` maps at the resolution of the mask (Taimeskhanov et al. use
            the map upsampled to the image; :func:`metrics.cam_dead_zone_mass` does that for
            CAMs).
        unseen: Boolean mask, True where the model cannot see: ``spatial``, ``(N, *spatial)``
            or ``(N, 1, *spatial)``. :func:`captum_camplus.masking.bottom_rows` builds their band.

    Raises:
        TypeError: for a mask that is not boolean.
        ValueError: for NaN/inf maps or a mask whose spatial shape differs from the maps'.
    """
    if unseen.dtype != torch.bool:
        raise TypeError(f"unseen must be a boolean mask (True = unseen), got {unseen.dtype}")
    spatial = maps.shape[2:]
    if maps.dim() < 3 or tuple(unseen.shape[-len(spatial) :]) != tuple(spatial):
        raise ValueError(
            f"the mask's spatial shape {tuple(unseen.shape)} does not match the maps' "
            f"{tuple(spatial)} (maps of shape {tuple(maps.shape)}): upsample the maps to the "
            "mask first, e.g. with captum_camplus.upsample_and_normalize"
        )
    unseen = unseen.to(maps.device)
    if unseen.dim() == len(spatial) + 1:  # (N, *spatial)
        unseen = unseen.unsqueeze(1)
    try:
        torch.broadcast_shapes(unseen.shape, maps.shape)
    except RuntimeError as error:
        raise ValueError(
            f"the mask of shape {tuple(unseen.shape)} does not fit maps of shape "
            f"{tuple(maps.shape)}: pass one mask for all images or one per image"
        ) from error
    if not maps.is_floating_point():  # a boolean or integer map: its values, as numbers
        maps = maps.to(torch.float64)
    if not bool(torch.isfinite(maps).all()):
        raise ValueError("the maps contain NaN or inf values; their dead-zone mass is undefined")
    dims = tuple(range(1, maps.dim()))
    total = torch.linalg.vector_norm(maps, dim=dims, dtype=torch.float64)
    inside = torch.linalg.vector_norm(maps * unseen, dim=dims, dtype=torch.float64)
    mass = inside / torch.where(total > 0, total, torch.ones_like(total))
    return _reduce(mass, reduction)


class ScoreIntervals(NamedTuple):
    """Bootstrap intervals of :func:`score_intervals`, each ``(M,)`` ends, one per method."""

    average_drop: Interval | None  #: None when left out (scores it is undefined for)
    increase_in_confidence: Interval
    win_percentage: Interval | None  #: None for one method


def score_intervals(
    y: Tensor,
    o: Tensor,
    *,
    rtol: float = TIE_RTOL,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
    with_average_drop: bool = True,
) -> ScoreIntervals:
    """Paired bootstrap (BCa) intervals of average drop, increase in confidence and win %.

    ``y`` is ``(N,)``, ``o`` is ``(M, N)`` (one row per method). Each resample draws the same
    images for every method; the statistics are those of :func:`average_drop`,
    :func:`increase_in_confidence` and :func:`win_percentage` (tie tolerance ``rtol``) on the
    resampled images. Win % is a mean of per-image shares among the methods, so the resample's
    win % is the mean of the resampled images' shares. Without ``with_average_drop`` (scores
    it is undefined for, such as raw logits) its interval is None; the others are unchanged, as
    the resampled images depend only on the number of images and the seed.
    """
    if o.dim() != 2:
        raise ValueError(f"o must be (methods, images), got shape {tuple(o.shape)}")
    columns = [torch.stack([increase_in_confidence(y, row, "none") for row in o], dim=1)]
    if with_average_drop:
        columns.insert(0, torch.stack([average_drop(y, row, "none") for row in o], dim=1))
    if o.shape[0] > 1:
        columns.append(win_percentage(o, "none", rtol).T)
    ends = paired_bootstrap(
        torch.cat(columns, dim=1),
        lambda sample: sample.mean(axis=1),
        resamples=resamples,
        seed=seed,
        level=level,
    )
    methods = o.shape[0]
    parts = (
        Interval(
            ends.low[k * methods : (k + 1) * methods], ends.high[k * methods : (k + 1) * methods]
        )
        for k in range(len(columns))
    )
    drop = next(parts) if with_average_drop else None
    increase = next(parts)
    return ScoreIntervals(drop, increase, next(parts, None))


class RelativePerformanceIntervals(NamedTuple):
    """Bootstrap intervals of :class:`RelativePerformanceStats`' dataset values (0-d ends)."""

    geometric_mean: Interval
    log_mean: Interval
    log_std: Interval


def relative_performance_intervals(
    log_o_new: Tensor,
    log_o_base: Tensor,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> RelativePerformanceIntervals:
    """Paired bootstrap (BCa) intervals of :func:`relative_performance`'s geometric mean
    ``exp(mean_i log(O'_i / O_i))``, log mean and log std (population) over resampled images.

    Identical scores give exactly ``[1, 1]``, ``[0, 0]`` and ``[0, 0]``.
    """
    log_ratio = relative_performance(log_o_new, log_o_base).log_ratio

    def statistic(sample: np.ndarray) -> np.ndarray:
        log_mean = sample[:, :, 0].mean(axis=1)
        return np.stack([np.exp(log_mean), log_mean, sample[:, :, 0].std(axis=1)], axis=1)

    ends = paired_bootstrap(log_ratio, statistic, resamples=resamples, seed=seed, level=level)
    return RelativePerformanceIntervals(*(Interval(ends.low[k], ends.high[k]) for k in range(3)))


class PairComparison(NamedTuple):
    """How often a first method beats a second on the same images (:func:`compare_pair`)."""

    wins: Tensor  #: % of images on which the first scores higher (beyond the tolerance)
    ties: Tensor  #: % of images within the tolerance
    losses: Tensor  #: % of images on which the second scores higher
    wins_interval: Interval  #: bootstrap interval of ``wins`` (0-d ends)
    images_won: int
    images_tied: int
    images_lost: int
    p_value: float  #: exact two-sided sign test on the images not tied


def compare_pair(
    o_first: Tensor,
    o_second: Tensor,
    *,
    rtol: float = TIE_RTOL,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> PairComparison:
    """The share of images on which the first method's ``O_i`` beats the second's, with ties.

    A tie is the tie of :func:`win_percentage`: the smaller ``O_i`` within ``rtol`` (relative)
    of the larger. Wins, ties and losses are counted apart (and add up to 100 %); the win share
    gets a paired bootstrap interval and the wins vs losses an exact sign test
    (:func:`metrics.intervals.sign_test`).
    """
    if rtol < 0:
        raise ValueError(f"rtol must be non-negative, got {rtol}")
    first, second = (
        _scores(o_first, "O of the first method"),
        _scores(o_second, "O of the second method", like=o_first),
    )
    if first.numel() == 0:
        raise ValueError("comparing two methods needs at least one image, got none")
    best = torch.maximum(first, second)
    tied = best - torch.minimum(first, second) <= rtol * best.abs()
    won, lost = ~tied & (first > second), ~tied & (first < second)
    per_image = torch.stack([won, tied, lost], dim=1).to(torch.float64) * 100
    shares = per_image.mean(dim=0)
    ends = paired_bootstrap(
        per_image[:, :1],
        lambda sample: sample.mean(axis=1),
        resamples=resamples,
        seed=seed,
        level=level,
    )
    images_won, images_tied, images_lost = (int(c) for c in (won.sum(), tied.sum(), lost.sum()))
    return PairComparison(
        shares[0],
        shares[1],
        shares[2],
        Interval(ends.low[0], ends.high[0]),
        images_won,
        images_tied,
        images_lost,
        sign_test(images_won, images_lost),
    )


def _scores(scores: Tensor, what: str, like: Tensor | None = None) -> Tensor:
    """Validate a 1-D tensor of per-image scores and promote it to float64."""
    if not isinstance(scores, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(scores).__name__}")
    if scores.dim() != 1:
        raise ValueError(f"{what} must be 1-D (one score per image), got {tuple(scores.shape)}")
    if like is not None and scores.shape != like.shape:
        raise ValueError(f"{what} has shape {tuple(scores.shape)} but expected {tuple(like.shape)}")
    scores = scores.to(torch.float64)
    if bool(torch.isnan(scores).any()):
        raise ValueError(f"{what} contains NaN values (a NaN score, or the log of a negative one)")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(f"{what} contains infinite values (for log scores: a score of 0 or below)")
    return scores


def _reduce(values: Tensor, reduction: Reduction, dim: int = 0) -> Tensor:
    if reduction == "none":
        return values
    if reduction == "mean":
        if values.shape[dim] == 0:
            raise ValueError("cannot average over zero images")
        return values.mean(dim=dim)
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


__all__ = [
    "TIE_RTOL",
    "Interval",
    "PairComparison",
    "RelativePerformanceIntervals",
    "RelativePerformanceStats",
    "ScoreIntervals",
    "average_drop",
    "compare_pair",
    "dead_zone_mass",
    "increase_in_confidence",
    "paired_bootstrap",
    "relative_performance",
    "relative_performance_intervals",
    "score_intervals",
    "sign_test",
    "win_percentage",
]
