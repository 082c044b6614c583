"""Perturbation metrics: deletion and insertion AUC, and ROAD, batched over maps and images.

Every function takes ``forward`` (the model, or :func:`metrics.confidence.model_forward` of it),
the ``inputs`` it takes, ``(N, C, H, W)``, and the maps to score at the inputs' size: ``(N, H,
W)``, ``(N, 1, H, W)``, or a stack ``(K, N, 1, H, W)`` of ``K`` methods or kinds of map. Every
perturbation step is one forward of all ``K * N`` perturbed images together. Scores are the
target's under ``scores`` (the kind a wrapper states, else softmax;
:func:`metrics.confidence.class_scores`).

Pixel order: by decreasing map value, ties by increasing flat index ``h * W + w`` (a stable
sort), so equal maps always give the same curve. ROAD's least-relevant-first order is the
reverse of that order.

References:
- Petsiuk, Das & Saenko (2018), "RISE: Randomized Input Sampling for Explanation of Black-box
  Models", BMVC 2018, arXiv:1806.07421: deletion and insertion.
- Rong, Leemann, Borisov, Kasneci & Kasneci (2022), "A Consistent and Efficient Evaluation
  Strategy for Attribution Methods", ICML 2022, arXiv:2202.00449: ROAD, noisy linear
  imputation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from .confidence import ScoreKind, as_target, class_scores, model_score_kind
from .functional import Reduction, _reduce

Forward = Callable[[Tensor], Tensor]
Order = Literal["most", "least"]

#: Standard deviation, in pixels, of the Gaussian blur of insertion's default substrate (RISE's
#: code blurs with sigma 5 and an 11-pixel kernel; here the kernel spans +-3 sigma).
BLUR_SIGMA = 5.0
#: ROAD's percentages of pixels removed (10 % to 90 %, as pytorch-grad-cam's averaged ROAD).
ROAD_PERCENTILES: tuple[float, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
#: ROAD's noise: the standard deviation of the Gaussian noise added to imputed values, in the
#: units of ``inputs`` (Rong et al.'s code: 0.01).
ROAD_NOISE = 0.01
#: Neighbour weights of the linear imputation (Rong et al.): 1/6 for the four direct neighbours,
#: 1/12 for the four diagonal ones.
_NEIGHBOURS = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])


def deletion_auc(
    forward: Forward,
    inputs: Tensor,
    maps: Tensor,
    target: Tensor | int | Sequence[int],
    *,
    steps: int,
    substrate: Tensor | None = None,
    scores: ScoreKind | None = None,
    reduction: Reduction = "none",
) -> Tensor:
    """Deletion AUC (Petsiuk et al.): the area under the target's score as the most relevant
    pixels are replaced by ``substrate`` (default zeros), lower is better.

    At step ``s = 0..steps`` the first ``k_s = round(s * H * W / steps)`` pixels of the order
    are replaced in every channel; ``AUC = sum_s (k_s - k_{s-1}) / (H W) * (p_s + p_{s-1}) / 2``
    (trapezoid rule over the fraction of pixels), in [0, 1] for probabilities.

    Returns:
        float64 AUCs, ``(N,)`` or ``(K, N)`` (``reduction="mean"``: averaged over images).
    """
    curve, fraction = perturbation_curve(
        forward, inputs, maps, target, steps=steps, substrate=substrate, insert=False, scores=scores
    )
    return _reduce(trapezoid(curve, fraction), reduction, dim=-1)


def insertion_auc(
    forward: Forward,
    inputs: Tensor,
    maps: Tensor,
    target: Tensor | int | Sequence[int],
    *,
    steps: int,
    substrate: Tensor | None = None,
    scores: ScoreKind | None = None,
    reduction: Reduction = "none",
) -> Tensor:
    """Insertion AUC (Petsiuk et al.): the area under the target's score as the most relevant
    pixels are copied from the image into ``substrate`` (default :func:`gaussian_blur` of the
    inputs, sigma :data:`BLUR_SIGMA`), higher is better. Steps and area as
    :func:`deletion_auc`."""
    curve, fraction = perturbation_curve(
        forward, inputs, maps, target, steps=steps, substrate=substrate, insert=True, scores=scores
    )
    return _reduce(trapezoid(curve, fraction), reduction, dim=-1)


def perturbation_curve(
    forward: Forward,
    inputs: Tensor,
    maps: Tensor,
    target: Tensor | int | Sequence[int],
    *,
    steps: int,
    substrate: Tensor | None = None,
    insert: bool = False,
    scores: ScoreKind | None = None,
) -> tuple[Tensor, Tensor]:
    """The deletion (``insert=False``) or insertion curve: the target's score at each step.

    Returns:
        ``(curve, fraction)``: float64 scores ``(K, N, steps + 1)`` (``(N, steps + 1)`` for
        maps without ``K``) and the fraction of pixels ``k_s / (H W)`` of each step.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive integer (e.g. 100), got {steps!r}")
    kind = model_score_kind(forward, scores)
    flat, stacked = _flat_maps(maps, inputs)
    if substrate is None:
        substrate = gaussian_blur(inputs) if insert else torch.zeros_like(inputs)
    substrate = _check_substrate(substrate, inputs)
    rank = relevance_rank(flat)
    pixels = flat.shape[-1]
    counts = [round(s * pixels / steps) for s in range(steps + 1)]
    target = _targets(target, flat.shape[:2], inputs.device)
    curve = torch.stack(
        [
            _perturbed_scores(forward, inputs, substrate, rank < k, insert, target, kind)
            for k in counts
        ],
        dim=-1,
    )
    fraction = torch.tensor(counts, dtype=torch.float64, device=curve.device) / pixels
    return (curve if stacked else curve[0]), fraction


def trapezoid(curve: Tensor, fraction: Tensor) -> Tensor:
    """Trapezoid rule of ``curve`` over ``fraction`` along the last dimension."""
    return torch.trapezoid(curve, fraction, dim=-1)


def relevance_rank(flat: Tensor) -> Tensor:
    """Each pixel's position in the order of decreasing map value, ties by flat index:
    ``rank < k`` marks the ``k`` most relevant pixels."""
    order = torch.sort(flat, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    positions = torch.arange(flat.shape[-1], device=flat.device).expand_as(order)
    return rank.scatter_(-1, order, positions)


def gaussian_blur(inputs: Tensor, sigma: float = BLUR_SIGMA) -> Tensor:
    """Each channel blurred by a separable Gaussian of ``sigma`` pixels, kernel +-3 sigma, the
    border replicated; in the inputs' dtype and device."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    radius = max(1, int(3 * sigma + 0.5))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(device=inputs.device, dtype=inputs.dtype)
    n, c, h, w = inputs.shape
    x = inputs.reshape(n * c, 1, h, w)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return x.reshape(n, c, h, w)


def road_curve(
    forward: Forward,
    inputs: Tensor,
    maps: Tensor,
    target: Tensor | int | Sequence[int],
    *,
    order: Order = "most",
    percentiles: Sequence[float] = ROAD_PERCENTILES,
    noise: float = ROAD_NOISE,
    seed: int = 0,
    scores: ScoreKind | None = None,
    clip: tuple[float, float] | None = None,
) -> Tensor:
    """ROAD (Rong et al.): the target's score after removing the ``p`` % most (``order="most"``,
    MoRF) or least (``"least"``, LeRF) relevant pixels and imputing them with
    :func:`noisy_linear_imputation`, for each ``p`` of ``percentiles``.

    ``round(p * H * W / 100)`` pixels are removed, in the pixel order of the module (reversed for
    ``"least"``). The noise is drawn from a generator on the inputs' device (where the maps are
    moved) seeded with ``seed``,
    one draw per percentile in order, so a call is reproducible on one device. ``clip`` bounds
    the imputed images (``(0, 1)`` for images in [0, 1] that a preprocessing normalises).

    Returns:
        float64 scores ``(K, N, len(percentiles))`` (``(N, ...)`` for maps without ``K``).
    """
    if order not in ("most", "least"):
        raise ValueError(f"order must be 'most' (MoRF) or 'least' (LeRF), got {order!r}")
    if not percentiles or any(not 0 <= p < 100 for p in percentiles):
        raise ValueError(
            f"percentiles must be a non-empty list of percentages in [0, 100), got {percentiles}"
        )
    if noise < 0:
        raise ValueError(f"noise must be non-negative, got {noise}")
    kind = model_score_kind(forward, scores)
    flat, stacked = _flat_maps(maps, inputs)
    rank = relevance_rank(flat)
    if order == "least":  # the reverse of the most-relevant-first order
        rank = flat.shape[-1] - 1 - rank
    target = _targets(target, flat.shape[:2], inputs.device)
    generator = torch.Generator(device=flat.device).manual_seed(seed)
    pixels = flat.shape[-1]
    curve = []
    for p in percentiles:
        removed = rank < round(p * pixels / 100)
        images = inputs.expand(removed.shape[0], *inputs.shape).flatten(0, 1)
        holes = removed.flatten(0, 1).view(-1, *inputs.shape[2:])
        batch = noisy_linear_imputation(images, holes, noise, generator).to(inputs.dtype)
        if clip is not None:
            batch = batch.clamp(*clip)
        curve.append(class_scores(forward, batch, target.flatten(), kind).value.view(target.shape))
    result = torch.stack(curve, dim=-1)
    return result if stacked else result[0]


def noisy_linear_imputation(
    images: Tensor,
    removed: Tensor,
    noise: float = ROAD_NOISE,
    generator: torch.Generator | None = None,
    tolerance: float = 1e-10,
) -> Tensor:
    """Rong et al.'s noisy linear imputation of the ``removed`` pixels of ``(N, C, H, W)`` images.

    Each removed pixel ``i`` is the weighted mean of its neighbours ``j`` inside the image,
    ``x_i = sum_j w_ij x_j / sum_j w_ij`` (weights 1/6 direct, 1/12 diagonal), kept pixels fixed:
    a sparse symmetric positive definite system ``(D - W_UU) x_U = W_UK x_K`` per image and
    channel, solved on the images' device in float64 by batched conjugate gradients (to a relative
    residual ``tolerance``). Gaussian noise of standard deviation ``noise`` is then added to the
    removed pixels. ``removed`` is ``(N, H, W)``, True where a pixel is removed.

    Returns:
        The imputed images, float64.

    Raises:
        ValueError: for masks of the wrong shape or an image with every pixel removed (nothing
            to impute from).
        RuntimeError: if the solve has not reached ``tolerance`` after twice as many iterations
            as removed pixels (exact arithmetic needs at most as many).
    """
    n, c, h, w = images.shape
    if removed.shape != (n, h, w):
        raise ValueError(f"removed must be (N, H, W) = {(n, h, w)}, got {tuple(removed.shape)}")
    if bool(removed.flatten(1).all(dim=1).any()):
        raise ValueError("an image has every pixel removed: there is nothing to impute from")
    solution, _ = _impute(images, removed, tolerance)
    if noise:
        draw = torch.randn(
            solution.shape, generator=generator, device=solution.device, dtype=solution.dtype
        )
        solution = solution + noise * draw * removed.to(solution.device)[:, None]
    return solution


def _impute(images: Tensor, removed: Tensor, tolerance: float) -> tuple[Tensor, int]:
    """The noiseless imputation of :func:`noisy_linear_imputation` and its iteration count."""
    x = images.to(torch.float64)
    unknown = removed.to(device=x.device, dtype=torch.float64)
    kernel = _NEIGHBOURS.to(device=x.device, dtype=torch.float64).view(1, 1, 3, 3)
    known = (1 - unknown[:, None]) * x
    right = unknown[:, None] * F.conv2d(known.flatten(0, 1)[:, None], kernel, padding=1).view(
        x.shape
    )
    levels = _Multigrid(_Stencil.imputation(unknown, kernel))
    limit = 2 * int(removed.flatten(1).sum(dim=1).max().item()) + 10
    z, iterations = _conjugate_gradients(
        levels.fine.apply, right, tolerance, limit, levels.precondition
    )
    return torch.where(removed.to(x.device)[:, None], z, x), iterations


class _Stencil:
    """A 9-point operator ``(A z)_i = sum_k a_ik z_{i+k}`` over ``k`` in ``{-1, 0, 1}^2``, with
    coefficients ``(N, 9, H, W)`` per image (shared by its channels) and zeros outside the grid.
    Rows outside ``unknown`` are the identity, so a solve never moves those pixels."""

    def __init__(self, coefficients: Tensor, unknown: Tensor) -> None:
        self.coefficients = coefficients
        self.unknown = unknown  # (N, H, W) float, 1 on the pixels solved for

    @classmethod
    def imputation(cls, unknown: Tensor, kernel: Tensor) -> _Stencil:
        """``(D - W_UU)`` on the removed pixels ``U``, the identity on the kept ones."""
        n, h, w = unknown.shape
        inside = torch.ones(1, 1, h, w, dtype=unknown.dtype, device=unknown.device)
        degree = F.conv2d(inside, kernel, padding=1)[0, 0]
        padded = F.pad(unknown, (1, 1, 1, 1))
        rows = []
        for k in range(9):
            dy, dx = divmod(k, 3)
            if k == 4:
                rows.append(unknown * degree + (1 - unknown))
            else:
                rows.append(-kernel[0, 0, dy, dx] * unknown * padded[:, dy : dy + h, dx : dx + w])
        return cls(torch.stack(rows, dim=1), unknown)

    @property
    def diagonal(self) -> Tensor:
        return self.coefficients[:, 4, None]

    def apply(self, z: Tensor) -> Tensor:
        """``A z`` for ``z`` of shape ``(N, C, H, W)``."""
        h, w = z.shape[-2:]
        padded = F.pad(z, (1, 1, 1, 1))
        out = self.coefficients[:, 4, None] * z
        for k in (0, 1, 2, 3, 5, 6, 7, 8):
            dy, dx = divmod(k, 3)
            out = out + self.coefficients[:, k, None] * padded[..., dy : dy + h, dx : dx + w]
        return out

    def coarsen(self) -> _Stencil:
        """The Galerkin operator ``P^T A P`` of the aggregation ``P`` of 2x2 blocks of unknown
        pixels (a grid of odd size is first padded with identity rows)."""
        n, _, h, w = self.coefficients.shape
        a = self.coefficients * self.unknown[:, None]  # drop the identity rows
        a = F.pad(a, (0, w % 2, 0, h % 2)).view(n, 9, (h + 1) // 2, 2, (w + 1) // 2, 2)
        coarse = torch.zeros(n, 9, (h + 1) // 2, (w + 1) // 2, dtype=a.dtype, device=a.device)
        for k in range(9):
            dy, dx = divmod(k, 3)
            for py in (0, 1):
                for px in (0, 1):
                    target = 3 * ((py + dy - 1) // 2 + 1) + (px + dx - 1) // 2 + 1
                    coarse[:, target] += a[:, k, :, py, :, px]
        unknown = _restrict(self.unknown[:, None]).clamp(max=1)[:, 0]
        coarse[:, 4] += 1 - unknown
        return _Stencil(coarse, unknown)


def _restrict(r: Tensor) -> Tensor:
    """``P^T r``: the sums over 2x2 blocks (zero-padded to even size)."""
    h, w = r.shape[-2:]
    return F.avg_pool2d(F.pad(r, (0, w % 2, 0, h % 2)), 2, divisor_override=1)


class _Multigrid:
    """A symmetric multigrid V-cycle, used as the preconditioner of conjugate gradients: damped
    Jacobi smoothing, unsmoothed 2x2 aggregation with Galerkin coarse operators, a dense
    Cholesky solve on the coarsest grid. Symmetric and positive definite, so CG stays valid; it
    cuts the iterations from growing with the hole's width to a few tens."""

    SWEEPS = 1
    DAMPING = 2 / 3
    COARSEST = 64  # pixels of the grid solved densely

    def __init__(self, fine: _Stencil) -> None:
        self.levels = [fine]
        while self.levels[-1].unknown[0].numel() > self.COARSEST:
            self.levels.append(self.levels[-1].coarsen())
        last = self.levels[-1]
        n, h, w = last.unknown.shape
        basis = torch.eye(h * w, dtype=last.coefficients.dtype, device=last.coefficients.device)
        columns = [last.apply(basis.view(1, h * w, h, w).expand(n, -1, -1, -1).contiguous())]
        dense = columns[0].flatten(2)  # (N, column, row): symmetric, so the same matrix
        self.factor = torch.linalg.cholesky(dense)

    @property
    def fine(self) -> _Stencil:
        return self.levels[0]

    def precondition(self, r: Tensor) -> Tensor:
        return self._cycle(0, r)

    def _cycle(self, level: int, r: Tensor) -> Tensor:
        operator = self.levels[level]
        if level == len(self.levels) - 1:
            shape = r.shape
            flat = r.flatten(2).transpose(1, 2)
            return torch.cholesky_solve(flat, self.factor).transpose(1, 2).reshape(shape)
        scale = self.DAMPING / operator.diagonal
        e = scale * r
        for _ in range(self.SWEEPS - 1):
            e = e + scale * (r - operator.apply(e))
        h, w = r.shape[-2:]
        unknown = operator.unknown[:, None]
        correction = self._cycle(level + 1, _restrict(unknown * (r - operator.apply(e))))
        e = e + unknown * correction.repeat_interleave(2, -2).repeat_interleave(2, -1)[..., :h, :w]
        for _ in range(self.SWEEPS):
            e = e + scale * (r - operator.apply(e))
        return e


def _conjugate_gradients(
    system: Callable[[Tensor], Tensor],
    right: Tensor,
    tolerance: float,
    limit: int,
    precondition: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, int]:
    """Solve ``system(z) = right`` for each of a batch of SPD systems (one per leading index) by
    (preconditioned) conjugate gradients; returns the solution and the iterations taken,
    raising if a relative residual of ``tolerance`` is not reached in ``limit`` iterations."""
    dims = tuple(range(1, right.dim()))
    z = torch.zeros_like(right)
    residual = right.clone()
    norm = (residual * residual).sum(dims, keepdim=True)
    goal = tolerance**2 * norm.clamp(min=torch.finfo(right.dtype).tiny)
    preconditioned = residual if precondition is None else precondition(residual)
    direction = preconditioned
    rho = (residual * preconditioned).sum(dims, keepdim=True)
    iterations = 0
    for iterations in range(limit + 1):  # noqa: B007 (the count is returned)
        if bool((norm <= goal).all()) or iterations == limit:
            break
        applied = system(direction)
        curvature = (direction * applied).sum(dims, keepdim=True)
        step = rho / torch.where(curvature > 0, curvature, torch.ones_like(curvature))
        step = torch.where(norm <= goal, torch.zeros_like(step), step)
        z = z + step * direction
        residual = residual - step * applied
        norm = (residual * residual).sum(dims, keepdim=True)
        preconditioned = residual if precondition is None else precondition(residual)
        new_rho = (residual * preconditioned).sum(dims, keepdim=True)
        direction = (
            preconditioned + new_rho / torch.where(rho > 0, rho, torch.ones_like(rho)) * direction
        )
        rho = new_rho
    if not bool((norm <= goal).all()):
        worst = (norm / goal).max().sqrt().item() * tolerance
        raise RuntimeError(
            f"the imputation's conjugate gradients stopped at a relative residual of {worst:.1e} "
            f"after {limit} iterations, above the tolerance {tolerance:.0e}: pass a larger "
            "tolerance to noisy_linear_imputation"
        )
    return z, iterations


def _flat_maps(maps: Tensor, inputs: Tensor) -> tuple[Tensor, bool]:
    """Maps as ``(K, N, H * W)`` float64, and whether they came with ``K``.

    Raises:
        ValueError: for inputs that are not finite ``(N, C, H, W)`` images, maps not at the
            inputs' size or of another number of images, or NaN maps.
    """
    if not isinstance(inputs, Tensor) or inputs.dim() != 4:
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be a tensor of images (N, C, H, W), got {shape}")
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError("the inputs contain NaN or inf values: the model's scores are undefined")
    n, _, h, w = inputs.shape
    stacked = maps.dim() == 5
    if maps.dim() == 3:
        maps = maps[:, None]
    if maps.dim() == 4:
        maps = maps[None]
    if maps.dim() != 5 or maps.shape[1:] != (n, 1, h, w):
        raise ValueError(
            f"maps of shape {tuple(maps.shape)} do not fit inputs of shape "
            f"{tuple(inputs.shape)}: pass (N, H, W), (N, 1, H, W) or (K, N, 1, H, W) maps at the "
            "inputs' size, e.g. with captum_camplus.upsample_and_normalize(maps, inputs.shape[2:])"
        )
    flat = maps.to(device=inputs.device, dtype=torch.float64).flatten(2)
    if bool(torch.isnan(flat).any()):
        raise ValueError("the maps contain NaN values: their pixel order is undefined")
    return flat, stacked


def _check_substrate(substrate: Tensor, inputs: Tensor) -> Tensor:
    if not isinstance(substrate, Tensor) or substrate.shape not in (inputs.shape, inputs.shape[1:]):
        shape = tuple(substrate.shape) if isinstance(substrate, Tensor) else substrate
        raise ValueError(
            f"the substrate must have the inputs' shape {tuple(inputs.shape)} (one per image) or "
            f"{tuple(inputs.shape[1:])} (one for all), got {shape}"
        )
    return substrate.to(device=inputs.device, dtype=inputs.dtype).expand_as(inputs)


def _targets(
    target: Tensor | int | Sequence[int], shape: torch.Size, device: torch.device
) -> Tensor:
    """The class of each image, ``(K, N)``."""
    return as_target(target, shape[1], device=device).expand(shape)


def _perturbed_scores(
    forward: Forward,
    inputs: Tensor,
    substrate: Tensor,
    chosen: Tensor,
    insert: bool,
    target: Tensor,
    kind: ScoreKind,
) -> Tensor:
    """One forward of the ``K * N`` images with the ``chosen`` pixels ``(K, N, H * W)`` deleted
    (replaced by the substrate) or inserted (into the substrate)."""
    mask = chosen.view(*chosen.shape[:2], 1, *inputs.shape[2:])
    images = (
        torch.where(mask, inputs, substrate) if insert else torch.where(mask, substrate, inputs)
    )
    values = class_scores(forward, images.flatten(0, 1), target.flatten(), kind).value
    return values.view(target.shape)


__all__ = [
    "BLUR_SIGMA",
    "ROAD_NOISE",
    "ROAD_PERCENTILES",
    "deletion_auc",
    "gaussian_blur",
    "insertion_auc",
    "noisy_linear_imputation",
    "perturbation_curve",
    "relevance_rank",
    "road_curve",
    "trapezoid",
]
