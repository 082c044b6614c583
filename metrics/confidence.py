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
from captum_camplus.utils import (
    check_target,
    cpu_forward_rows,
    model_scores,
    require_spatial,
)

from .functional import Reduction, dead_zone_mass
from .guards import check_not_probabilities

#: A user's preprocessing from an image in [0, 1] to the model input, e.g. a normalisation.
Preprocess = Callable[[Tensor], Tensor]


#: How the model's outputs become class scores: ``"softmax"`` probabilities over the classes (the
#: papers'), ``"sigmoid"`` probabilities per label (binary ``(N, 1)`` and multi-label models),
#: the ``"raw"`` outputs, or outputs that are scores already, taken as they are:
#: ``"probabilities"`` (each in [0, 1], e.g. a region's mean probability from
#: :class:`~captum_camplus.targets.SegmentationScores`, a box score from
#: :class:`~captum_camplus.targets.DetectionScores`) and ``"cosine"`` similarities in [-1, 1]
#: (:class:`~captum_camplus.targets.SimilarityScores`).
ScoreKind = Literal["softmax", "sigmoid", "raw", "probabilities", "cosine"]
#: The kinds a user chooses for a classifier's outputs (``camplus --scores``).
SCORES: tuple[ScoreKind, ...] = ("softmax", "sigmoid", "raw")
#: The kinds of outputs that are scores already, as a model states them in its class attribute
#: ``scores_kind`` (the wrappers of :mod:`captum_camplus.targets` do).
STATED_SCORES: tuple[ScoreKind, ...] = ("probabilities", "cosine")
#: Every kind of scores.
ALL_SCORES: tuple[ScoreKind, ...] = SCORES + STATED_SCORES
#: How far float rounding may carry a cosine similarity past [-1, 1].
_COSINE_SLACK = 1e-4


class Scores(NamedTuple):
    """The score of the explained class for each image, in float64."""

    value: Tensor  #: probability, raw output or cosine similarity (``Y`` or ``O``)
    log: Tensor  #: its logarithm; from ``log_softmax`` / ``logsigmoid`` (no underflow)
    target: Tensor  #: the explained class of each image (long)


def score_kind(scores: ScoreKind | None = None) -> ScoreKind:
    """The :data:`ScoreKind` of a ``scores=`` option (``None``: ``"softmax"``, the papers').

    Raises:
        TypeError: for True or False (no flag stands for a kind of score: name it).
        ValueError: for anything else that is not in :data:`ALL_SCORES`.
    """
    if scores is None:
        return "softmax"
    if isinstance(scores, bool):
        raise TypeError(
            f"scores={scores} is not a kind of score: pass scores='softmax', 'sigmoid' or 'raw'"
        )
    for kind in ALL_SCORES:
        if scores == kind:
            return kind
    raise ValueError(f"scores must be one of {ALL_SCORES}, got {scores!r}")


def stated_score_kind(model: object) -> ScoreKind | None:
    """The kind of scores ``model`` states in its class attribute ``scores_kind`` (a wrapper of
    :mod:`captum_camplus.targets`), or ``None`` if it states none.

    Raises:
        ValueError: for a stated kind that is not in :data:`STATED_SCORES`.
    """
    stated = getattr(type(model), "scores_kind", None)
    if stated is None or not isinstance(stated, str):
        return None
    for kind in STATED_SCORES:
        if stated == kind:
            return kind
    raise ValueError(
        f"{type(model).__name__}.scores_kind is {stated!r}; a model states one of "
        f"{STATED_SCORES}, or nothing"
    )


def model_score_kind(model: object, scores: ScoreKind | None = None) -> ScoreKind:
    """The kind of scores the metrics use for ``model``: ``scores`` if given, else the kind the
    model states (:func:`stated_score_kind`), else ``"softmax"``.

    A wrapper whose outputs are scores already (``SegmentationScores``: probabilities) is scored
    as it states: any other ``scores`` (a softmax or sigmoid on top of them, or ``"raw"``, under
    which post-softmax maps would put a softmax on them) is refused.

    Raises:
        ValueError: for a ``scores`` that contradicts the model's stated kind.
    """
    stated = stated_score_kind(model)
    if scores is None:
        return stated or "softmax"
    kind = score_kind(scores)
    if stated is None or kind == stated:
        return kind
    raise ValueError(
        f"{type(model).__name__} returns {_DESCRIBED[stated]} (its scores_kind), which the "
        f"metrics take as they are; scores={kind!r} does not fit them: leave scores out, or "
        f"pass scores={stated!r}"
    )


#: Each kind of scores in words.
_DESCRIBED: dict[str, str] = {
    "softmax": "softmax probabilities",
    "sigmoid": "sigmoid probabilities per label",
    "raw": "raw outputs",
    "probabilities": "probabilities",
    "cosine": "cosine similarities",
}


def describe_scores(scores: ScoreKind) -> str:
    """The kind of scores in words: ``"softmax probabilities"``."""
    return _DESCRIBED[score_kind(scores)]


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
    scores: ScoreKind | None = None,
) -> Scores:
    """Score of the target class on each input, from batched forwards without gradients (one
    per :data:`~captum_camplus.modules.CPU_FORWARD_BYTES` of images on a CPU, one for the batch
    elsewhere).

    Args:
        forward: The model (or :func:`model_forward` of it), returning ``(N, classes)`` (a
            Hugging Face ``ModelOutput`` gives its ``.logits``).
        inputs: The batch, on the model's device.
        target: One class (label) for all images, or one per image; ``None`` explains the
            predicted class.
        scores: ``None`` (default): the kind ``forward`` states, else ``"softmax"``
            (:func:`model_score_kind`). ``"softmax"``: probabilities over the classes (the
            papers' choice), from
            ``log_softmax`` in float64; refused for one output per image (a binary
            classifier, whose softmax is 1) and for outputs that already are probabilities
            (:func:`metrics.guards.check_not_probabilities`). ``"sigmoid"``: the probability of
            each label on its own, ``sigmoid(z_c)``, from ``logsigmoid`` in float64: binary
            ``(N, 1)`` and multi-label models, scored per label. ``"raw"``: the outputs, whose
            log is NaN where they are not positive. ``"probabilities"`` and ``"cosine"``: the
            outputs as they are, checked to lie in [0, 1] or [-1, 1] (:func:`check_range`); a
            probability of 0 has the log ``-inf``, a negative cosine a NaN one.
    """
    kind = model_score_kind(forward, scores)
    row_bytes = inputs[0].numel() * inputs.element_size() if len(inputs) else 1
    size = cpu_forward_rows(row_bytes) if inputs.device.type == "cpu" else max(len(inputs), 1)
    with torch.no_grad():
        outputs = torch.cat([model_scores(forward(part)) for part in inputs.split(size)])
    return target_scores(outputs, target, kind)


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
    check_range(outputs, kind)
    outputs = outputs.to(torch.float64)
    if kind in ("softmax", "sigmoid"):
        logs = torch.log_softmax(outputs, dim=1) if kind == "softmax" else F.logsigmoid(outputs)
        log = logs.gather(1, target[:, None])[:, 0]
        return Scores(log.exp(), log, target)
    value = outputs.gather(1, target[:, None])[:, 0]
    return Scores(value, value.log(), target)


def check_range(outputs: Tensor, scores: ScoreKind) -> None:
    """Raise unless outputs taken as they are lie in their kind's range: [0, 1] for
    ``"probabilities"``, [-1, 1] for ``"cosine"``, up to the rounding of their dtype (4 eps; for
    cosines at least 1e-4, as a norm is rounded too)."""
    bounds = {"probabilities": (0.0, 1.0), "cosine": (-1.0, 1.0)}
    if scores not in bounds or not outputs.is_floating_point():
        return
    low, high = bounds[scores]
    slack = max(4 * torch.finfo(outputs.dtype).eps, _COSINE_SLACK if scores == "cosine" else 0.0)
    outside = (outputs < low - slack) | (outputs > high + slack)
    if bool(outside.any()):
        bad = outputs[outside]
        raise ValueError(
            f"the model's outputs are taken as {_DESCRIBED[scores]} (scores={scores!r}), which "
            f"lie in [{low:g}, {high:g}], but they range over [{bad.min().item():.4g}, "
            f"{bad.max().item():.4g}]: a model that states this kind (scores_kind) must return "
            "scores in it; for a classifier's outputs of any range pass scores='raw' (or "
            "'softmax' for logits)"
        )


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
    "ALL_SCORES",
    "SCORES",
    "STATED_SCORES",
    "Preprocess",
    "ScoreKind",
    "Scores",
    "as_target",
    "cam_dead_zone_mass",
    "check_image",
    "check_range",
    "check_score_kind",
    "check_scores",
    "check_threshold",
    "class_scores",
    "describe_scores",
    "explanation_maps",
    "keep_mask",
    "model_forward",
    "model_score_kind",
    "score_kind",
    "stated_score_kind",
    "target_scores",
]
