"""Independent float64 references of the CAM formulas, written from the papers' equations, and
the capture of a layer's activations and gradients they are evaluated on.

The one reference of the project: the tests, the benchmark (``benchmarks/run.py``) and the
deviation report (``benchmarks/deviation.py``) all use it. The formulas are plain numpy with an
explicit loop over channels, so that they share nothing with the library (no torch broadcasting
tricks, no shared helpers). A and g have shape (N, K, *spatial).

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD,
  arXiv:2404.01964.
- Fu, Hu, Dong, Jiang, Zhang, Cheng & Yu (2020), "Axiom-based Grad-CAM: towards accurate
  visualization and explanation of CNNs", BMVC, arXiv:2008.02312.
- Jiang, Zhang, Hou, Cheng & Wei (2021), "LayerCAM: exploring hierarchical class activation maps
  for localization", IEEE Transactions on Image Processing 30.
- Muhammad & Yeasin (2020), "Eigen-CAM: class activation map using principal components",
  IJCNN, arXiv:2008.00299.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

#: Our Grad-CAM++ default: the denominator of Lerma & Lucas, eq. 13 clamped at 2.
CLAMPED_PP = "Grad-CAM++ (eq. 13, denominator clamped at 2)"


def capture_layer(model: nn.Module, layer: nn.Module, x: torch.Tensor, target) -> tuple:
    """Activations A of ``layer`` and gradients dS/dA of the summed target scores, by hand.

    Independent of Captum and of the library: a forward hook, one forward and one
    ``autograd.grad`` w.r.t. the layer output (no parameter gradients), the least any gradient
    CAM must do. ``target``: one class, or one per example (list or 1-D tensor).
    """
    captured: list[torch.Tensor] = []

    def keep_output(_module, _inputs, out):
        captured.append(out)
        return out.clone()  # later in-place ops (ReLU(inplace), +=) must not change A

    handle = layer.register_forward_hook(keep_output)
    try:
        scores = model(x)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise ValueError(f"the layer was called {len(captured)} times; expected once")
    targets = torch.as_tensor(target, device=scores.device).expand(x.shape[0])
    score = scores[torch.arange(x.shape[0]), targets].sum()
    (grad,) = torch.autograd.grad(score, captured[0])
    return captured[0].detach(), grad.detach()


def _as64(t) -> np.ndarray:
    return np.asarray(t.detach().cpu().double().numpy() if hasattr(t, "detach") else t, np.float64)


def _combine(A: np.ndarray, w: np.ndarray) -> np.ndarray:
    """L = sum_k w_k A^k (Lerma & Lucas, eq. 2 before the ReLU); w has shape (N, K) or A's shape."""
    n, k = A.shape[:2]
    out = np.zeros((n, 1, *A.shape[2:]))
    for i in range(n):
        for c in range(k):
            out[i, 0] += w[i, c] * A[i, c]
    return out


def grad_cam(A, g) -> np.ndarray:
    """Lerma & Lucas, eq. 1-2: w_k = (1/Z) sum_ij g_ij."""
    A, g = _as64(A), _as64(g)
    Z = int(np.prod(A.shape[2:]))
    w = g.reshape(*g.shape[:2], -1).sum(-1) / Z
    return _combine(A, w)


def grad_cam_plus(A, g) -> np.ndarray:
    """Lerma & Lucas, eq. 3: w_k = (1/Z) sum_ij ReLU(g_ij)."""
    A, g = _as64(A), _as64(g)
    Z = int(np.prod(A.shape[2:]))
    w = np.maximum(g, 0).reshape(*g.shape[:2], -1).sum(-1) / Z
    return _combine(A, w)


def hires_cam(A, g) -> np.ndarray:
    """Taimeskhanov et al., definition 6: sum_k g^k (.) A^k."""
    A, g = _as64(A), _as64(g)
    return (g * A).sum(axis=1, keepdims=True)


def grad_cam_pp_alphas(
    A,
    g,
    form: str = "paper",
    lam: float = 1.0,
    stabilizer: str = "none",
    min_denominator: float = 2.0,
    normalize: bool = False,
) -> np.ndarray:
    """Alphas by Lerma & Lucas, eq. 9 ("paper") / eq. 13 ("simplified"), scaled by lambda (eq. 12).

    alpha = 0 where g <= 0 (only ReLU(g) > 0 entries reach the weights; 0/0 := 0 at g = 0).
    """
    A, g = _as64(A), _as64(g)
    alphas = np.zeros_like(g)
    for i in range(A.shape[0]):
        for c in range(A.shape[1]):
            S = A[i, c].sum()
            for idx in np.ndindex(*A.shape[2:]):
                gij = g[i, c][idx]
                if gij <= 0:
                    continue
                d = 2.0 + lam * S * gij
                if form == "paper":
                    value = gij**2 / (2 * gij**2 + lam * S * gij**3)
                elif form == "simplified":
                    value = 1.0 / d
                else:
                    value = 0.5
                if form != "constant" and d < min_denominator:
                    if stabilizer == "clamp":
                        value = 1.0 / min_denominator
                    elif stabilizer == "zero":
                        value = 0.0
                alphas[i, c][idx] = value
            if normalize:
                total = alphas[i, c].sum()
                if total != 0:
                    alphas[i, c] /= total
    return alphas


def grad_cam_pp(A, g, **alpha_options) -> np.ndarray:
    """Lerma & Lucas, eq. 4: w_k = sum_ij alpha_ij ReLU(g_ij)."""
    A64, g64 = _as64(A), _as64(g)
    alphas = grad_cam_pp_alphas(A64, g64, **alpha_options)
    w = (alphas * np.maximum(g64, 0)).reshape(*g64.shape[:2], -1).sum(-1)
    return _combine(A64, w)


def _grad_cam_pp_paper(A, g) -> np.ndarray:
    return grad_cam_pp(A, g, form="paper", stabilizer="none")


def _grad_cam_pp_clamped(A, g) -> np.ndarray:
    return grad_cam_pp(A, g, form="simplified", stabilizer="clamp")


def xgrad_cam(A, g, eps: float = 0.0) -> np.ndarray:
    """Fu et al.: w_k = sum_ij A_ij / (sum_ab A_ab + eps) g_ij; 0 where the sum is 0."""
    A, g = _as64(A), _as64(g)
    w = np.zeros(A.shape[:2])
    for i in range(A.shape[0]):
        for c in range(A.shape[1]):
            total = A[i, c].sum() + eps
            if total != 0:
                w[i, c] = (A[i, c] * g[i, c]).sum() / total
    return _combine(A, w)


def layer_cam(A, g) -> np.ndarray:
    """Jiang et al.: sum_k ReLU(g^k) (.) A^k."""
    A, g = _as64(A), _as64(g)
    return _combine(A, np.maximum(g, 0))


def element_wise_grad_cam(A, g) -> np.ndarray:
    """sum_k ReLU(g^k (.) A^k)."""
    A, g = _as64(A), _as64(g)
    out = np.zeros((A.shape[0], 1, *A.shape[2:]))
    for c in range(A.shape[1]):
        out[:, 0] += np.maximum(g[:, c] * A[:, c], 0)
    return out


def eigen_projection(X, centred: bool = False) -> np.ndarray:
    """Muhammad & Yeasin: X (positions x channels) = U S V^T, map = X v_1 (X less its
    column means if ``centred``); v_1's sign makes sum(X v_1) >= 0 for the uncentred X."""
    X = _as64(X)
    out = np.zeros((X.shape[0], 1, *X.shape[2:]))
    for i in range(X.shape[0]):
        rows = X[i].reshape(X.shape[1], -1).T  # (P, C)
        used = rows - rows.mean(axis=0) if centred else rows
        v = np.linalg.svd(used, full_matrices=False)[2][0]
        if (rows @ v).sum() < 0:
            v = -v
        out[i, 0] = (used @ v).reshape(X.shape[2:])
    return out


def eigen_cam(A, g, centred: bool = False) -> np.ndarray:
    """EigenCAM: the projection of A on its first principal component (g unused)."""
    return eigen_projection(A, centred)


def eigen_grad_cam(A, g, centred: bool = False) -> np.ndarray:
    """EigenGrad-CAM: the projection of g (.) A on its first principal component."""
    return eigen_projection(_as64(g) * _as64(A), centred)


def _score64(model: nn.Module, x: torch.Tensor, target: int) -> float:
    with torch.no_grad():
        return float(model(x[None].double())[0, target])


def _per_channel(model: nn.Module, layer: nn.Module, x: torch.Tensor, target, weight) -> tuple:
    """``A`` of the float64 ``model`` and ``w[i, c] = weight(A, i, c, target_i)``, one by one."""
    model = model.double()
    A, _ = capture_layer(model, layer, x.double(), target)
    targets = torch.as_tensor(target).expand(x.shape[0]).tolist()
    w = np.array([[weight(A, i, c, targets[i]) for c in range(A.shape[1])] for i in range(len(A))])
    return _as64(A), w


def score_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target, align_corners=False):
    """Taimeskhanov et al., definition 7, one image and one channel at a time in float64:
    w = softmax_k(f(X H^k) - f(X)), H^k = min-max normalised bilinear upsampling of A^k."""

    def increase(A, i, c, t):
        up = torch.nn.functional.interpolate(
            A[i, c][None, None], size=x.shape[2:], mode="bilinear", align_corners=align_corners
        )[0, 0]
        # a constant channel's upsampling is constant (H = 0), though its float rounding is
        # not: decided on A^k, not on the rounding noise that min-max would blow up to [0, 1]
        span = float(up.max() - up.min()) if float(A[i, c].max() - A[i, c].min()) > 0 else 0.0
        mask = (up - up.min()) / span if span > 0 else torch.zeros_like(up)
        return _score64(model, x[i].double() * mask, t) - _score64(model, x[i], t)

    A, beta = _per_channel(model, layer, x, target, increase)
    w = np.exp(beta - beta.max(axis=1, keepdims=True))
    return _combine(A, w / w.sum(axis=1, keepdims=True))


def ablation_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target):
    """Taimeskhanov et al., definition 8, in float64: w_k = (y - y_k) / y, y_k the score with
    channel k of the layer's output set to 0 (one forward of the whole model per channel)."""

    def drop(A, i, c, t):
        def ablate(_module, _inputs, out):
            out = out.clone()
            out[:, c] = 0.0
            return out

        y = _score64(model, x[i], t)
        handle = layer.register_forward_hook(ablate)
        try:
            return (y - _score64(model, x[i], t)) / y
        finally:
            handle.remove()

    return _combine(*_per_channel(model, layer, x, target, drop))


#: The catalogue beyond the default methods, by display name: ``(A, g) -> map`` (default options).
CATALOGUE_FORMULAS = {
    "XGrad-CAM": xgrad_cam,
    "LayerCAM": layer_cam,
    "Element-wise Grad-CAM": element_wise_grad_cam,
    "EigenCAM": eigen_cam,
    "EigenGrad-CAM": eigen_grad_cam,
}


#: The registered methods this module has a formula for, by display name: ``(A, g) -> map``.
#: A registered method without one (a new method, a plugin) is skipped by the checks that use
#: this reference; its own tests check it.
FORMULAS = {
    "Grad-CAM": grad_cam,
    "Grad-CAM+": grad_cam_plus,
    "Grad-CAM++": _grad_cam_pp_paper,
    "HiResCAM": hires_cam,
}


def reference_maps(A, g) -> dict[str, np.ndarray]:
    """Each method of :data:`FORMULAS`' ReLU'd ``(N, *spatial)`` map; Grad-CAM++ both as
    published (eq. 9, the peers' formula) and as our default computes it (:data:`CLAMPED_PP`)."""
    maps = {name: formula(A, g) for name, formula in FORMULAS.items()}
    maps[CLAMPED_PP] = _grad_cam_pp_clamped(A, g)
    return {name: np.maximum(cam[:, 0], 0.0) for name, cam in maps.items()}


# --------------------------------------------------------------- transformer layers on the grid


@dataclass(frozen=True)
class GridCase:
    """A timm transformer layer and how its tensor maps onto the patch grid."""

    arch: str
    layer: str  # dotted module name
    layout: Any
    prefix: int | None  # prefix tokens to drop; None for channels-last
    grid: tuple[int, int]
    kwargs: tuple = ()


GRID_CASES = {
    "vit_tiny": GridCase("vit_tiny_patch16_224", "blocks.11.norm1", "tokens", 1, (14, 14)),
    "deit_tiny_distilled": GridCase(
        "deit_tiny_distilled_patch16_224", "blocks.11.norm1", "tokens", 2, (14, 14)
    ),
    "swin_tiny": GridCase(
        "swin_tiny_patch4_window7_224", "layers.3.blocks.1.norm1", "channels_last", None, (7, 7)
    ),
}


def grid_reference(tensor: torch.Tensor, case: GridCase) -> np.ndarray:
    """(N, P + H*W, D) or (N, H, W, C) -> (N, C, H, W), in numpy."""
    array = tensor.detach().cpu().double().numpy()
    if case.prefix is None:
        return np.ascontiguousarray(np.transpose(array, (0, 3, 1, 2)))
    n, _, d = array.shape
    patches = array[:, case.prefix :, :]
    return np.ascontiguousarray(np.transpose(patches.reshape(n, *case.grid, d), (0, 3, 1, 2)))
