"""Explanation maps ``E = L (.) I`` and the class scores ``Y`` and ``O`` of one batched forward.

Everything runs on the model's device. Two ways to say what ``I`` is:

- by default ``I`` is the model input as given (what Quantus passes), so ``E = L (.) x``;
- with ``preprocess``, ``I`` is an image in [0, 1] and the model sees ``preprocess(I)`` and
  ``preprocess(E)``, as in the papers, where ``E = L (.) I`` is defined on the image.

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD,
  arXiv:2404.01964.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from captum_camplus import upsample_and_normalize
from captum_camplus.utils import check_target, model_scores, require_spatial

from .functional import Reduction, dead_zone_mass
from .guards import check_not_probabilities

#: A user's preprocessing from an image in [0, 1] to the model input, e.g. a normalisation.
Preprocess = Callable[[Tensor], Tensor]


#: How the model's outputs become class scores: ``"softmax"`` probabilities over the classes (the
#: papers'), ``"sigmoid"`` probabilities per label (binary ``(N, 1)`` and multi-label models),
#: or the ``"raw"`` outputs.
ScoreKind = Literal["softmax", "sigmoid", "raw"]
SCORES: tuple[ScoreKind, ...] = ("softmax", "sigmoid", "raw")


class Scores(NamedTuple):
    """The score of the explained class for each image, in float64."""

    value: Tensor  #: softmax or sigmoid probability, or the raw output (``Y`` or ``O``)
    log: Tensor  #: its logarithm; from ``log_softmax`` / ``logsigmoid`` (no underflow)
    target: Tensor  #: the explained class of each image (long)


def score_kind(scores: ScoreKind | None = None) -> ScoreKind:
    """The :data:`ScoreKind` of a ``scores=`` option (``None``: ``"softmax"``, the papers').

    Raises:
        TypeError: for True or False (no flag stands for a kind of score: name it).
        ValueError: for anything else that is not in :data:`SCORES`.
    """
    if scores is None:
        return "softmax"
    if isinstance(scores, bool):
        raise TypeError(
            f"scores={scores} is not a kind of score: pass scores='softmax', 'sigmoid' or 'raw'"
        )
    for kind in SCORES:
        if scores == kind:
            return kind
    raise ValueError(f"scores must be one of {SCORES}, got {scores!r}")


def check_score_kind(outputs: Tensor, scores: ScoreKind) -> None:
    """Refuse a softmax over one output: ``(N, 1)`` is a binary classifier's logit, whose softmax
    is 1 for every image."""
    if scores == "softmax" and outputs.dim() == 2 and outputs.shape[1] == 1:
        raise ValueError(
            "the model returns one score per image (N, 1), a binary classifier: its softmax is 1 "
            "for every image, so every score and metric would be constant; pass "
            "scores='sigmoid' (the probability of the positive class) or scores='raw' (the logit)"
        )


def model_forward(
    model: Callable[[Tensor], Tensor], preprocess: Preprocess | None = None
) -> Callable[[Tensor], Tensor]:
    """The function the metrics call: ``model(preprocess(x))``.

    With ``preprocess``, every input must be an image in [0, 1] (checked on each call).
    """
    if preprocess is None:
        return model

    def forward(inputs: Tensor) -> Tensor:
        check_image(inputs)
        return model_scores(model(preprocess(inputs)))

    return forward


def check_image(images: Tensor) -> None:
    """Raise unless ``images`` lie in [0, 1], the range ``E = L (.) I`` is defined on."""
    if not bool(((images >= 0) & (images <= 1)).all()):
        raise ValueError(
            "with preprocess, the inputs must be images in [0, 1] (preprocess turns them into "
            f"model inputs), but they range over [{images.min().item():.4g}, "
            f"{images.max().item():.4g}]; pass preprocess=None to use the inputs as given"
        )


def explanation_maps(maps: Tensor, inputs: Tensor) -> Tensor:
    """``E = L (.) I`` (Lerma & Lucas, eq. 15): each map min-max normalised to [0, 1], upsampled
    to the inputs' size and multiplied into every channel.

    An all-zero map gives an all-zero ``E``; a NaN map raises ``ValueError``.
    """
    require_spatial(maps)  # a layer such as nn.Linear: say so, not that the shapes differ
    if maps.dim() != inputs.dim() or maps.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"maps of shape {tuple(maps.shape)} do not fit inputs of shape "
            f"{tuple(inputs.shape)}: pass one (N, 1, *spatial) map per image"
        )
    if maps.shape[1] not in (1, inputs.shape[1]):
        raise ValueError(
            f"maps have {maps.shape[1]} channels; use 1 or the inputs' {inputs.shape[1]}"
        )
    heatmaps = upsample_and_normalize(maps, inputs.shape[2:])
    return heatmaps.to(inputs.dtype) * inputs


def cam_dead_zone_mass(maps: Tensor, unseen: Tensor, reduction: Reduction = "mean") -> Tensor:
    """Dead-zone mass (Taimeskhanov et al., eq. 7) of maps at any resolution, each upsampled to the
    mask's size and min-max normalised first, like ``L`` in the explanation maps."""
    spatial = unseen.shape[-(maps.dim() - 2) :] if maps.dim() > 2 else unseen.shape
    return dead_zone_mass(upsample_and_normalize(maps, spatial), unseen, reduction)


def class_scores(
    forward: Callable[[Tensor], Tensor],
    inputs: Tensor,
    target: Tensor | int | Sequence[int] | np.ndarray | None = None,
    scores: ScoreKind = "softmax",
) -> Scores:
    """Score of the target class on each input, from one batched forward without gradients.

    Args:
        forward: The model (or :func:`model_forward` of it), returning ``(N, classes)`` (a
            Hugging Face ``ModelOutput`` gives its ``.logits``).
        inputs: The batch, on the model's device.
        target: One class (label) for all images, or one per image; ``None`` explains the
            predicted class.
        scores: ``"softmax"``: probabilities over the classes (the papers' choice), from
            ``log_softmax`` in float64; refused for one output per image (a binary
            classifier, whose softmax is 1) and for outputs that already are probabilities
            (:func:`metrics.guards.check_not_probabilities`). ``"sigmoid"``: the probability of
            each label on its own, ``sigmoid(z_c)``, from ``logsigmoid`` in float64: binary
            ``(N, 1)`` and multi-label models, scored per label. ``"raw"``: the outputs, whose
            log is NaN where they are not positive.
    """
    with torch.no_grad():
        outputs = model_scores(forward(inputs))
    return target_scores(outputs, target, scores)


def target_scores(
    outputs: Tensor,
    target: Tensor | int | Sequence[int] | np.ndarray | None = None,
    scores: ScoreKind = "softmax",
) -> Scores:
    """:func:`class_scores` from outputs already computed (e.g. by the CAM pass's forward)."""
    kind = score_kind(scores)
    outputs = model_scores(outputs)
    check_scores(outputs)
    check_score_kind(outputs, kind)
    outputs = outputs.detach()
    if target is None:
        target = outputs.argmax(dim=1)
    n, classes = outputs.shape
    target = as_target(target, n, classes, device=outputs.device)
    if kind == "softmax":
        check_not_probabilities(outputs)
    outputs = outputs.to(torch.float64)
    if kind == "raw":
        value = outputs.gather(1, target[:, None])[:, 0]
        return Scores(value, value.log(), target)
    logs = torch.log_softmax(outputs, dim=1) if kind == "softmax" else F.logsigmoid(outputs)
    log = logs.gather(1, target[:, None])[:, 0]
    return Scores(log.exp(), log, target)


def check_scores(outputs: object) -> None:
    """Raise unless the model's outputs are ``(N, classes)`` scores, none of them NaN (a NaN
    score is neither above nor below a threshold, and has no drop or ratio)."""
    if not isinstance(outputs, Tensor) or outputs.dim() != 2:
        shape = tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
        raise ValueError(f"the model must return (N, classes) scores, got {shape}")
    if not outputs.is_floating_point():
        raise ValueError(
            f"the model returned {outputs.dtype} scores: the metrics and the CAMs need floating "
            "point scores (logits or probabilities) to take gradients of"
        )
    if outputs.is_meta:
        raise ValueError("the model returned scores on the meta device, which hold no values")
    scores = outputs.detach()
    for what, bad in (("NaN", torch.isnan(scores)), ("+inf", scores == torch.inf)):
        rows = bad.any(dim=1).nonzero().flatten().tolist()
        if rows:
            shown = ", ".join(map(str, rows[:10])) + (" ..." if len(rows) > 10 else "")
            raise ValueError(
                f"the model returned {what} scores for {len(rows)} of {len(outputs)} images "
                f"(batch positions {shown}): their probabilities are undefined; check the model "
                "and its inputs"
            )


def as_target(
    target: Tensor | int | Sequence[int] | np.ndarray,
    n: int,
    classes: int | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """The explained class of each of ``n`` images as a long tensor on ``device``.

    The core's :func:`~captum_camplus.checks.check_target` decides what a valid target is (integer
    classes, one for the batch or one per image, none negative); ``classes`` bounds them above.
    """
    checked = check_target(target, n)
    if checked is None:
        raise ValueError("no target given: pass the class to explain, one or one per image")
    if isinstance(checked, tuple) or (
        isinstance(checked, list) and checked and isinstance(checked[0], tuple)
    ):
        raise ValueError(f"the metrics take one class index per image, not tuples: {target!r}")
    target = torch.as_tensor(checked, dtype=torch.long, device=device).flatten()
    if target.numel() == 1:
        target = target.expand(n)
    if classes is not None and bool((target >= classes).any()):
        raise ValueError(f"targets must lie in [0, {classes}), got {target.tolist()}")
    return target


def keep_mask(y: Tensor, threshold: float | None) -> Tensor:
    """Images whose score ``Y`` exceeds ``threshold`` (Lerma & Lucas keep > 0.5); all if None."""
    if threshold is None:
        return torch.ones_like(y, dtype=torch.bool)
    check_threshold(threshold)
    return y > threshold


def check_threshold(threshold: float | None) -> None:
    """Raise unless ``threshold`` is None or a real number (NaN keeps no image, silently)."""
    if threshold is None:
        return
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
        raise TypeError(f"threshold must be a number or None, got {type(threshold).__name__}")
    if math.isnan(threshold):
        raise ValueError("threshold is NaN: give a number (Lerma & Lucas use 0.5) or None")


__all__ = [
    "SCORES",
    "Preprocess",
    "ScoreKind",
    "Scores",
    "as_target",
    "cam_dead_zone_mass",
    "check_image",
    "check_score_kind",
    "check_scores",
    "check_threshold",
    "class_scores",
    "explanation_maps",
    "keep_mask",
    "model_forward",
    "score_kind",
    "target_scores",
]
