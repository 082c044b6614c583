"""Independent float64 references of the CAM formulas, written from the papers' equations.

Plain numpy with an explicit loop over channels, so that they share nothing with the library
(no torch broadcasting tricks, no shared helpers). A and g have shape (N, K, *spatial).

Papers (full references in the README): Lerma & Lucas (2022), arXiv:2205.10838; Taimeskhanov, Sicre
& Garreau (2024), arXiv:2404.01964.
"""

from __future__ import annotations

import numpy as np


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
