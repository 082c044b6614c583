"""Uncertainty of per-image metrics: a paired bootstrap over images (BCa intervals) and a sign test.

The bootstrap resamples the images with replacement. Resample ``r`` draws its ``N`` image
indices with ``numpy.random.Generator(PCG64(seed)).integers(0, N, N)``, one call per resample in
order, so the draws depend only on ``(N, seed)``: every method, every kind of map and every
metric computed with the same seed sees the same resampled images (the comparisons are paired),
and the chunks in which resamples are evaluated (to bound memory) change nothing. The
statistics are summed by numpy reductions, which do not depend on the thread count, so the
intervals are the same bits in one process and under ``torchrun`` (they are computed
from the merged result: every process's images, in rank order).

The interval is the bias-corrected and accelerated (BCa) one of Efron (1987), "Better Bootstrap
Confidence Intervals", JASA 82(397), 171-185, as written in Efron & Tibshirani (1993), "An
Introduction to the Bootstrap", chapter 14: with ``theta`` the statistic on the images,
``theta*_b`` on resample ``b`` and ``theta_(i)`` on the images without image ``i`` (jackknife),

    z0 = Phi^-1(p0),  p0 = (#{theta*_b < theta} + #{theta*_b <= theta}) / (2 B)
    a = sum_i (mean_i theta_(i) - theta_(i))^3 / (6 (sum_i (mean_i theta_(i) - theta_(i))^2)^(3/2))
    alpha_1,2 = Phi(z0 + (z0 + z) / (1 - a (z0 + z))),  z = Phi^-1((1 -/+ level) / 2)

and the ends are the ``alpha_1`` and ``alpha_2`` quantiles of ``theta*`` (linear interpolation).
Ties ``theta*_b = theta`` (within :data:`TIE_EPS`, relative) count one half in ``p0`` (discrete
statistics such as win %; ``scipy.stats.bootstrap`` too, without the tolerance); ``p0`` is kept
within ``[1/(2B), 1 - 1/(2B)]`` (what ``B`` resamples can resolve) and ``a = 0`` when every
jackknife value is equal, so constant values give the zero-width interval ``[theta, theta]``.
Equal to ``scipy.stats.bootstrap(method="BCa")`` given the same resamples; written here because
scipy draws its own indices, so separate calls (one per table, per pair of methods) would not
resample the same images. The jackknife costs
``O(N^2 K)``: BCa takes 1.2 times the percentile interval's time at 1,000 images and 12 columns,
2.9 times at 5,000. ``method="percentile"`` gives
the percentile interval (Efron & Tibshirani, chapter 13).

Coverage, measured by ``python -m benchmarks.coverage`` (``benchmarks/results/coverage.md``):
BCa holds 93-97 % from :data:`COVERAGE_FROM` images. Against the percentile interval it covers
more on skewed values (the mean of 30 lognormal values: 90.5 % against 88.7 %), less on
symmetric heavy tails (30 Student-t(3) values: 88.9 % against 92.6 %), and is conservative for
shares at 20-30 images (97-98 %); neither covers the standard deviation of heavy-tailed values
(81-87 % at 1000 images), so tables show it without an interval.

The sign test (Conover (1999), "Practical Nonparametric Statistics", section 3.4) asks whether
method A beats method B on more images than chance: under the null hypothesis each non-tied image
is a fair coin, so the two-sided p-value is ``min(1, 2 P(X <= min(w, l)))`` with
``X ~ Binomial(w + l, 1/2)``, ``w`` the images A wins and ``l`` those it loses; ties are left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from statistics import NormalDist
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

#: Resamples of the bootstrap (the intervals' ends need a few thousand).
RESAMPLES = 2000
#: Coverage of the intervals.
LEVEL = 0.95
#: Most float64 elements a chunk of resampled values holds (32 MiB).
CHUNK_ELEMENTS = 1 << 22
#: Per statistic (the names of ``python -m benchmarks.coverage``), the fewest images from which
#: the 95 % BCa intervals covered 93-97 % on every distribution simulated there, at that and at
#: every larger number of images (``benchmarks/results/coverage.md``); None: at none up to 1000.
COVERAGE_FROM: dict[str, int | None] = {
    "mean": 300,  # of unbounded values: skewed or heavy-tailed ones need hundreds of images
    "geometric mean": 300,  # exp of a mean: the same intervals (BCa maps through exp)
    "win %": 50,  # a share of 0/1 values: at 20-30 images BCa is conservative (97-98 %)
    "log std": None,  # heavy tails: 81-87 % at 1000 images
    "mean in [0, 1]": 20,  # of bounded values, as average drop or an AUC
}
#: Statistics shown without an interval where their coverage does not hold, with the reason.
WITHOUT_INTERVAL = {
    "log std": "the bootstrap covers a standard deviation far less often than 95 %",
}


class Coverage(NamedTuple):
    """What a statistic's interval can say at a number of images (:func:`coverage`)."""

    shown: bool  #: False: no interval (one image, or withheld: :data:`WITHOUT_INTERVAL`)
    approximate: bool  #: shown, below the images from which its coverage holds


def coverage(statistic: str, images: int) -> Coverage:
    """Whether ``statistic``'s interval is shown at ``images`` images, and whether it is
    approximate there (:data:`COVERAGE_FROM`)."""
    if statistic not in COVERAGE_FROM:
        raise ValueError(
            f"no coverage measured for {statistic!r}; the statistics are {', '.join(COVERAGE_FROM)}"
        )
    holds_from = COVERAGE_FROM[statistic]
    if holds_from is not None and images >= holds_from:
        return Coverage(True, False)
    if images < 2 or statistic in WITHOUT_INTERVAL:
        return Coverage(False, False)
    return Coverage(True, True)


#: Resampled statistics within this relative distance of the estimate tie with it in BCa's
#: ``p0``: a resample that draws the images in another order sums them in another order, and
#: such rounding must not decide (far above float64 rounding of sums of a million terms).
TIE_EPS = 1e-9
#: How an interval is read off the resampled statistics.
Method = Literal["bca", "percentile"]
METHODS: tuple[Method, ...] = ("bca", "percentile")

#: ``statistic(sample)``: ``(R, N, K)`` resampled per-image values -> ``(R, J)`` statistics.
Statistic = Callable[[np.ndarray], np.ndarray]

_NORMAL = NormalDist()


class Interval(NamedTuple):
    """An interval's ends, each a ``(J,)`` float64 tensor (NaN: no interval)."""

    low: Tensor
    high: Tensor


def resample_indices(
    images: int, resamples: int = RESAMPLES, seed: int = 0, chunk: int | None = None
) -> Iterator[np.ndarray]:
    """The bootstrap's image indices, ``(r, images)`` per chunk of ``r <= chunk`` resamples.

    The draws are those of the module docstring: the same ``(images, seed)`` gives the same
    indices whatever ``chunk`` is.
    """
    if images < 1:
        raise ValueError(f"the bootstrap needs at least one image, got {images}")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    generator = np.random.Generator(np.random.PCG64(seed))
    chunk = resamples if chunk is None else max(1, chunk)
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        yield np.stack([generator.integers(0, images, images) for _ in range(rows)])


def leave_one_out_indices(images: int, chunk: int | None = None) -> Iterator[np.ndarray]:
    """The jackknife's image indices: row ``i`` is every image but ``i`` (``(r, images - 1)``
    per chunk of ``r <= chunk`` rows, in order of ``i``)."""
    if images < 2:
        raise ValueError(f"the jackknife needs at least two images, got {images}")
    kept = np.arange(images - 1)
    chunk = images if chunk is None else max(1, chunk)
    for start in range(0, images, chunk):
        left_out = np.arange(start, min(start + chunk, images))
        yield kept[None, :] + (kept[None, :] >= left_out[:, None])


def quantiles(distribution: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """``distribution``'s quantiles along its second-to-last axis (``(..., B, J)``), one
    probability per element of ``(..., J)``; linear interpolation between order statistics at
    ``h = (B - 1) p``, as ``numpy.quantile``'s default."""
    ordered = np.sort(distribution, axis=-2)
    h = (ordered.shape[-2] - 1) * np.asarray(probabilities, dtype=np.float64)
    below = np.floor(h).astype(np.int64)
    above = np.minimum(below + 1, ordered.shape[-2] - 1)
    low = np.take_along_axis(ordered, below[..., None, :], axis=-2)[..., 0, :]
    high = np.take_along_axis(ordered, above[..., None, :], axis=-2)[..., 0, :]
    return low + (h - below) * (high - low)


def bca_probabilities(
    estimate: np.ndarray, distribution: np.ndarray, jackknife: np.ndarray, level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray]:
    """BCa's ``alpha_1`` and ``alpha_2`` (module docstring), each ``(..., J)``.

    Args:
        estimate: ``(..., J)`` the statistics on the images.
        distribution: ``(..., B, J)`` on the resamples.
        jackknife: ``(..., N, J)`` on the images without each image in turn.
        level: Coverage.
    """
    resamples = distribution.shape[-2]
    theta = estimate[..., None, :]
    tied = np.abs(distribution - theta) <= TIE_EPS * np.maximum(np.abs(distribution), np.abs(theta))
    below = 2 * (~tied & (distribution < theta)).sum(axis=-2) + tied.sum(axis=-2)
    p0 = np.clip(below / (2 * resamples), 0.5 / resamples, 1 - 0.5 / resamples)
    z0 = _inverse_normal(p0)
    u = jackknife.mean(axis=-2, keepdims=True) - jackknife
    squares = (u**2).sum(axis=-2)
    defined = squares > 0
    a = np.where(defined, (u**3).sum(axis=-2) / (6 * np.where(defined, squares, 1.0) ** 1.5), 0.0)
    ends = []
    for tail in ((1 - level) / 2, (1 + level) / 2):
        shifted = z0 + _NORMAL.inv_cdf(tail)
        ends.append(_normal(z0 + shifted / (1 - a * shifted)))
    return ends[0], ends[1]


def paired_bootstrap(
    per_image: Tensor | np.ndarray,
    statistic: Statistic,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
    method: Method = "bca",
) -> Interval:
    """BCa (or percentile) interval of ``statistic`` over resamples of the images (rows).

    Args:
        per_image: ``(N, K)`` values, one row per image (or ``(N,)``: one column). Columns are
            resampled together, so statistics that compare columns are paired.
        statistic: Maps resampled values ``(R, N, K)`` to ``(R, J)`` statistics (``(R,)`` for
            one), e.g. ``lambda s: s.mean(axis=1)``; it must take any number of images ``N``
            (the jackknife leaves one out).
        resamples: How many resamples.
        seed: Seeds the draws (:func:`resample_indices`).
        level: Coverage.
        method: ``"bca"`` (the module docstring) or ``"percentile"`` (the ``(1 - level)/2`` and
            ``(1 + level)/2`` quantiles of the resampled statistics).

    Returns:
        The ends of the interval, ``(J,)`` float64 each; NaN for one image, which says nothing
        about the spread.

    Raises:
        ValueError: for no images, non-finite values, a level outside (0, 1) or an unknown
            method.
    """
    values = np.asarray(
        per_image.detach().cpu().double().numpy() if isinstance(per_image, Tensor) else per_image,
        dtype=np.float64,
    )
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(
            f"per-image values must be (images,) or (images, columns), got {values.shape}"
        )
    if not np.isfinite(values).all():
        raise ValueError("the per-image values contain NaN or infinite values")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    images, columns = values.shape
    chunk = max(1, CHUNK_ELEMENTS // max(1, images * columns))
    distribution = _evaluate(values, statistic, resample_indices(images, resamples, seed, chunk))
    if images == 1:
        nothing = torch.full((distribution.shape[1],), math.nan, dtype=torch.float64)
        return Interval(nothing, nothing.clone())
    if method == "percentile":
        tails = np.array([(1 - level) / 2, (1 + level) / 2])[:, None]
        probabilities = np.broadcast_to(tails, (2, distribution.shape[1]))
    else:
        estimate = _evaluate(values, statistic, iter([np.arange(images)[None, :]]))[0]
        jackknife = _evaluate(values, statistic, leave_one_out_indices(images, chunk))
        probabilities = np.stack(bca_probabilities(estimate, distribution, jackknife, level))
    low, high = (quantiles(distribution, p) for p in probabilities)
    return Interval(torch.from_numpy(low.copy()), torch.from_numpy(high.copy()))


def _evaluate(
    values: np.ndarray, statistic: Statistic, indices: Iterator[np.ndarray]
) -> np.ndarray:
    """``statistic`` on each row of indices into the images, ``(rows, J)``."""
    stats = []
    for rows in indices:
        computed = np.asarray(statistic(values[rows]), dtype=np.float64)
        stats.append(computed.reshape(len(rows), -1))
    return np.concatenate(stats)


_normal = np.vectorize(_NORMAL.cdf, otypes=[np.float64])
_inverse_normal = np.vectorize(_NORMAL.inv_cdf, otypes=[np.float64])


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign test: ``min(1, 2 P(X <= k))``, ``X ~ Bin(n, 1/2)``, with
    ``n = wins + losses`` (ties left out before) and ``k = min(wins, losses)``. 1 when ``n = 0``.

    The tail ``P(X <= k) = 2^-n sum_{j <= k} C(n, j)`` is summed in log space,
    ``log C(n, j) = lgamma(n + 1) - lgamma(j + 1) - lgamma(n - j + 1)``, with the log-sum-exp
    taken about the largest term (``j = k``, as ``k <= n/2``): no normal approximation, no
    overflow, exact to a few units of float rounding, and ``O(n)`` time.
    """
    if wins < 0 or losses < 0:
        raise ValueError(f"wins and losses must be non-negative, got {wins} and {losses}")
    n, k = wins + losses, min(wins, losses)
    if 2 * k >= n:  # the tail holds the median: P(X <= k) >= 1/2
        return 1.0
    log_n_factorial = math.lgamma(n + 1)
    log_terms = [
        log_n_factorial - math.lgamma(j + 1) - math.lgamma(n - j + 1) for j in range(k + 1)
    ]
    largest = log_terms[-1]
    log_tail = largest + math.log(math.fsum(math.exp(t - largest) for t in log_terms))
    return min(1.0, math.exp(math.log(2) + log_tail - n * math.log(2)))


__all__ = [
    "CHUNK_ELEMENTS",
    "COVERAGE_FROM",
    "LEVEL",
    "METHODS",
    "RESAMPLES",
    "TIE_EPS",
    "WITHOUT_INTERVAL",
    "Coverage",
    "Interval",
    "Method",
    "Statistic",
    "bca_probabilities",
    "coverage",
    "leave_one_out_indices",
    "paired_bootstrap",
    "quantiles",
    "resample_indices",
    "sign_test",
]
