"""ROAD's imputation cost: our float64 solvers of Rong et al.'s noisy linear imputation against
pytorch-grad-cam's sparse solve, for 3 x 224 x 224 images with 10, 50 and 90 % of their pixels
removed in the order of a smooth CAM-like map.

Rows: the direct sparse LU (``solver="direct"``, what CPU tensors get), conjugate gradients
with the multigrid preconditioner (``solver="cg"``, what accelerator tensors get) and plain
conjugate gradients (the solver before both). Times are medians of ``--repeats`` calls on a
batch of ``--batch`` images, reported per image and as ratios to pytorch-grad-cam's (one image
per call, as it takes them) in the same run; ``iterations`` are CG's.

Rerun: ``PYTHONPATH=$PWD .venv/bin/python -m benchmarks.road_cost``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from pytorch_grad_cam.metrics.road import NoisyLinearImputer
from torch import Tensor
from torch.nn import functional as F

from metrics import imputation as I
from metrics.perturbation import relevance_rank

SIZE = 224
PERCENTAGES = (10, 50, 90)


def removal(percentage: float, batch: int) -> Tensor:
    """``(batch, H, W)`` masks of the ``percentage`` % most relevant pixels of smooth maps."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(batch, 1, 7, 7, generator=generator)
    smooth = F.interpolate(coarse, size=(SIZE, SIZE), mode="bicubic", align_corners=False)
    rank = relevance_rank(smooth.flatten(1))
    return (rank < round(percentage * SIZE * SIZE / 100)).view(batch, SIZE, SIZE)


def plain_cg(images: Tensor, removed: Tensor) -> tuple[Tensor, int]:
    """The solver before the preconditioner: unpreconditioned CG on the same system."""
    unknown = removed.to(torch.float64)
    kernel = I.NEIGHBOUR_WEIGHTS.to(torch.float64).view(1, 1, 3, 3)
    fine = I._Stencil.imputation(unknown, kernel)
    known = (1 - unknown[:, None]) * images
    right = unknown[:, None] * F.conv2d(known.flatten(0, 1)[:, None], kernel, padding=1).view(
        images.shape
    )
    limit = 2 * int(removed.flatten(1).sum(1).max()) + 10
    return I._conjugate_gradients(fine.apply, right, 1e-10, limit)


def median_time(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--plain", action="store_true", help="time plain CG too (slow)")
    args = parser.parse_args()
    n = args.batch
    images = torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).double()
    peer = NoisyLinearImputer(noise=0.0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {n}, "
        f"median of {args.repeats}; seconds per image, ratio to pytorch-grad-cam"
    )
    print(
        "| removed | pytorch-grad-cam | direct (s) | ratio | multigrid CG (s) | ratio "
        "| iterations | plain CG (s) | ratio | iterations | max abs diff direct - peer "
        "| max abs diff CG - direct |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for percentage in PERCENTAGES:
        removed = removal(percentage, n)
        keep = [(~removed[i]).float() for i in range(n)]

        def theirs(keep: list[Tensor] = keep) -> list[Tensor]:
            return [peer(images[i].float(), keep[i]) for i in range(n)]

        def direct(removed: Tensor = removed) -> Tensor:
            return I._direct_imputation(images, removed)

        def multigrid(removed: Tensor = removed) -> tuple[Tensor, int]:
            return I._cg_imputation(images, removed, 1e-10)

        peer_s = median_time(theirs, args.repeats) / n
        direct_s = median_time(direct, args.repeats) / n
        cg_s = median_time(multigrid, args.repeats) / n
        solved, iterations = multigrid()
        exact = direct()
        outs = theirs()
        peer_diff = max((exact[i].float() - outs[i]).abs().max().item() for i in range(n))
        plain = "n/a | n/a | n/a"
        if args.plain:
            plain_s = median_time(lambda removed=removed: plain_cg(images, removed), 1) / n
            plain = f"{plain_s:.3f} | {plain_s / peer_s:.1f} | {plain_cg(images, removed)[1]}"
        print(
            f"| {percentage} % | {peer_s:.3f} | {direct_s:.3f} | {direct_s / peer_s:.2f} "
            f"| {cg_s:.3f} | {cg_s / peer_s:.1f} | {iterations} | {plain} | {peer_diff:.1e} "
            f"| {(solved - exact).abs().max().item():.1e} |"
        )


if __name__ == "__main__":
    main()
