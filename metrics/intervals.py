"""Uncertainty of per-image metrics: a paired percentile bootstrap over images and a sign test.

The bootstrap (Efron & Tibshirani (1993), "An Introduction to the Bootstrap", chapter 13, the
percentile interval) resamples the images with replacement. Resample ``r`` draws its ``N`` image
indices with ``numpy.random.Generator(PCG64(seed)).integers(0, N, N)``, one call per resample in
order, so the draws depend only on ``(N, seed)``: every method, every kind of map and every
metric computed with the same seed sees the same resampled images (the comparisons are paired),
and the chunks in which resamples are evaluated (to bound memory) change nothing. The
statistics are summed by numpy reductions, which do not depend on the thread count, so the
intervals are the same bits in one process and under ``torchrun``.

The sign test (Conover (1999), "Practical Nonparametric Statistics", section 3.4) asks whether
method A beats method B on more images than chance: under the null hypothesis each non-tied image
is a fair coin, so the two-sided p-value is ``min(1, 2 P(X <= min(w, l)))`` with
``X ~ Binomial(w + l, 1/2)``, ``w`` the images A wins and ``l`` those it loses; ties are left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

#: Resamples of the bootstrap (the percentile interval's ends need a few thousand).
RESAMPLES = 2000
#: Coverage of the intervals.
LEVEL = 0.95
#: Most float64 elements a chunk of resampled values holds (32 MiB).
CHUNK_ELEMENTS = 1 << 22

#: ``statistic(sample)``: ``(R, N, K)`` resampled per-image values -> ``(R, J)`` statistics.
Statistic = Callable[[np.ndarray], np.ndarray]


class Interval(NamedTuple):
    """A percentile interval's ends, each a ``(J,)`` float64 tensor."""

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


def paired_bootstrap(
    per_image: Tensor | np.ndarray,
    statistic: Statistic,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> Interval:
    """Percentile interval of ``statistic`` over resamples of the images (rows).

    Args:
        per_image: ``(N, K)`` values, one row per image (or ``(N,)``: one column). Columns are
            resampled together, so statistics that compare columns are paired.
        statistic: Maps resampled values ``(R, N, K)`` to ``(R, J)`` statistics (``(R,)`` for
            one), e.g. ``lambda s: s.mean(axis=1)``.
        resamples: How many resamples.
        seed: Seeds the draws (:func:`resample_indices`).
        level: Coverage: the interval runs from the ``(1 - level)/2`` to the ``(1 + level)/2``
            quantile of the resampled statistics (linear interpolation).

    Returns:
        The ends of the interval, ``(J,)`` float64 each.

    Raises:
        ValueError: for no images, non-finite values or a level outside (0, 1).
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
    images, columns = values.shape
    chunk = max(1, CHUNK_ELEMENTS // max(1, images * columns))
    stats = []
    for indices in resample_indices(images, resamples, seed, chunk):
        computed = np.asarray(statistic(values[indices]), dtype=np.float64)
        stats.append(computed.reshape(len(indices), -1))
    ends = np.quantile(np.concatenate(stats), [(1 - level) / 2, (1 + level) / 2], axis=0)
    low, high = torch.from_numpy(ends[0].copy()), torch.from_numpy(ends[1].copy())
    return Interval(low, high)


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
    "LEVEL",
    "RESAMPLES",
    "Interval",
    "Statistic",
    "paired_bootstrap",
    "resample_indices",
    "sign_test",
]
