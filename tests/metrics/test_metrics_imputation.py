"""Rong et al.'s noisy linear imputation (metrics.imputation): both solvers against a dense float64
solve of the paper's system, against pytorch-grad-cam's and Quantus' imputers, and their errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metrics_models import imputation_by_hand

from metrics import imputation as I
from metrics.perturbation import relevance_rank

# the peers' scipy solvers warn of numpy 2's __array_wrap__
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")
SOLVERS = ["direct", "cg"]


@pytest.fixture(scope="module")
def holes():
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(2, 3, 12, 10, generator=generator, dtype=torch.float64)
    removed = torch.rand(2, 12, 10, generator=generator) < 0.6
    removed[1, :6] = True  # a large hole touching the border
    removed[1, 6:] = False
    return images, removed


@pytest.mark.parametrize("solver", SOLVERS)
def test_imputation_equals_a_dense_solve(holes, solver) -> None:
    images, removed = holes
    got = I.noisy_linear_imputation(images, removed, noise=0.0, solver=solver)
    assert got.dtype == torch.float64
    for i in range(2):
        expected = imputation_by_hand(images[i].numpy(), removed[i].numpy())
        np.testing.assert_allclose(got[i].numpy(), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("solver", SOLVERS)
def test_imputation_equals_pytorch_grad_cam_and_quantus(holes, solver) -> None:
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    perturb = pytest.importorskip("quantus.functions.perturb_func")
    images, removed = holes
    got = I.noisy_linear_imputation(images, removed, noise=0.0, solver=solver)
    for i in range(2):
        keep = (~removed[i]).double()  # pytorch-grad-cam's mask: 1 = kept
        peer = road.NoisyLinearImputer(noise=0.0)(images[i].float(), keep)
        np.testing.assert_allclose(got[i].numpy(), peer.numpy(), atol=1e-6)  # float32 result
        flat = np.flatnonzero(removed[i].numpy())  # Quantus takes flat indices of (H, W)
        theirs = perturb.noisy_linear_imputation(images[i].numpy(), flat, noise=0.0)
        np.testing.assert_allclose(got[i].numpy(), theirs, atol=1e-8)


def test_both_solvers_equal_a_dense_solve_to_1e_10_at_90_percent_removed() -> None:
    generator = torch.Generator().manual_seed(5)
    images = torch.rand(2, 3, 19, 23, generator=generator, dtype=torch.float64)
    smooth = torch.nn.functional.interpolate(
        torch.rand(2, 1, 4, 4, generator=generator), size=(19, 23)
    )
    removed = relevance_rank(smooth.flatten(1)).view(2, 19, 23) < round(0.9 * 19 * 23)
    removed[1] = torch.rand(19, 23, generator=generator) < 0.9  # scattered holes
    got, iterations = I._cg_imputation(images, removed, 1e-10)
    assert iterations < 40  # the multigrid preconditioner, not the hole's width, bounds them
    direct = I._direct_imputation(images, removed)
    for i in range(2):
        expected = imputation_by_hand(images[i].numpy(), removed[i].numpy())
        np.testing.assert_allclose(got[i].numpy(), expected, rtol=0, atol=1e-10)
        np.testing.assert_allclose(direct[i].numpy(), expected, rtol=0, atol=1e-12)


def test_auto_solves_cpu_tensors_directly_and_keeps_float32_images_exact(holes) -> None:
    images, removed = holes
    auto = I.noisy_linear_imputation(images.float(), removed, noise=0.0)
    direct = I.noisy_linear_imputation(images.float(), removed, noise=0.0, solver="direct")
    assert torch.equal(auto, direct) and auto.dtype == torch.float64
    kept = ~removed[:, None].expand_as(images)
    assert torch.equal(auto[kept], images.float().double()[kept])


def test_a_solve_that_does_not_converge_says_so() -> None:
    scale = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)  # three distinct eigenvalues
    right = torch.ones(1, 3, dtype=torch.float64)
    solved, iterations = I._conjugate_gradients(lambda z: scale * z, right, 1e-12, 3)
    torch.testing.assert_close(solved, 1 / scale)
    assert iterations == 3
    with pytest.raises(RuntimeError, match="after 1 iterations, above the tolerance 1e-12"):
        I._conjugate_gradients(lambda z: scale * z, right, 1e-12, 1)


@pytest.mark.parametrize("solver", SOLVERS)
def test_imputation_noise_is_seeded_and_only_on_removed_pixels(holes, solver) -> None:
    images, removed = holes
    clean = I.noisy_linear_imputation(images, removed, noise=0.0, solver=solver)
    draws = [
        I.noisy_linear_imputation(
            images, removed, 0.5, torch.Generator().manual_seed(1), solver=solver
        )
        for _ in range(2)
    ]
    torch.testing.assert_close(draws[0], draws[1])
    noise = draws[0] - clean
    kept = ~removed[:, None].expand_as(images)
    assert bool((noise[kept] == 0).all())
    assert noise[~kept].std().item() == pytest.approx(0.5, rel=0.15)


def test_bad_input_is_refused(holes) -> None:
    images, removed = holes
    with pytest.raises(ValueError, match="every pixel removed"):
        I.noisy_linear_imputation(images, torch.ones(2, 12, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"removed must be \(N, H, W\) = \(2, 12, 10\)"):
        I.noisy_linear_imputation(images, removed[:, :, :5])
    with pytest.raises(ValueError, match="solver must be one of"):
        I.noisy_linear_imputation(images, removed, solver="lu")  # type: ignore[arg-type]
