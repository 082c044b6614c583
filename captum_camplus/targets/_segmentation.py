"""Segmentation logits as one score per class: the mean probability of the class over a region."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from captum_camplus.targets._outputs import OutputKey, output_tensor


class SegmentationScores(nn.Module):
    r"""``(N, K)`` class scores from a segmentation model's ``(N, K, h, w)`` logits.

    For each class ``k`` the score is the mean softmax probability of ``k`` over the mask's
    pixels,

    .. math::

        S_{n,k} = \frac{\sum_{ij} m_{n,ij}\, p_{n,k,ij}}{\sum_{ij} m_{n,ij}}, \qquad
        p_{n,\cdot,ij} = \operatorname{softmax}_k z_{n,\cdot,ij},

    so ``target=k`` explains "class ``k`` in this region". Without a mask, ``m`` is the pixels
    predicted as ``k`` (``m_{n,k,ij} = [\arg\max_c z_{n,c,ij} = k]``, a mask per class), and a
    class with no predicted pixel scores a differentiable 0 (its gradient is 0, not NaN).
    Captum's segmentation tutorial wraps a model by hand in the same spirit; here the model
    stays a submodule, so its layers are hooked as usual:

    >>> cams = LayerGradCamPlusPlus(SegmentationScores(model), model.backbone.layer4)
    >>> maps = cams.attribute(images, target=15)

    Args:
        model: A segmentation model; its output is read by ``key``.
        mask: ``(H, W)`` (every example) or ``(N, H, W)``, bool or values in [0, 1], at the
            input's size or the logits' size; resized (nearest) to the logits' resolution
            when they differ (Hugging Face segmentation logits are at 1/4 of the input's).
        key: The logits in the model's output. ``None`` (default): a tensor output itself, the
            ``"out"`` of a dict (torchvision's segmentation models) or the ``.logits`` of a
            Hugging Face ``ModelOutput``; else a dict key, field name or tuple position.

    Raises:
        ValueError: a mask that is not 2-D or 3-D, has values outside [0, 1] or an empty
            example; at the forward, logits that are not 4-D, or a mask whose size or batch
            fits neither the input nor the logits.
    """

    #: The scores are probabilities already: the metrics take them as they are
    #: (``metrics.confidence``, ``scores="probabilities"``), with no softmax on top.
    scores_kind: ClassVar[str] = "probabilities"
    mask: Tensor | None

    def __init__(self, model: nn.Module, mask: Tensor | None = None, key: OutputKey = None) -> None:
        super().__init__()
        self.model = model
        self.key = key
        self.register_buffer(
            "mask", None if mask is None else _checked_mask(mask), persistent=False
        )

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        logits = output_tensor(self.model(*args, **kwargs), self.key, defaults=("out",))
        if logits.dim() != 4:
            raise ValueError(
                f"SegmentationScores needs (N, K, h, w) logits, the model returns shape "
                f"{tuple(logits.shape)}"
            )
        probabilities = logits.softmax(dim=1)
        if self.mask is None:
            predicted = F.one_hot(logits.argmax(dim=1), logits.shape[1])  # (N, h, w, K)
            weights = predicted.permute(0, 3, 1, 2).to(probabilities.dtype)
            pixels = weights.sum(dim=(2, 3)).clamp_min(1)  # no predicted pixel: a 0 score
        else:
            inputs = args[0] if args else None
            input_size = tuple(inputs.shape[-2:]) if isinstance(inputs, Tensor) else None
            weights = _mask_at(self.mask, logits, input_size).to(probabilities.dtype)
            pixels = weights.sum(dim=(2, 3))
        return (weights * probabilities).sum(dim=(2, 3)) / pixels


def _checked_mask(mask: Tensor) -> Tensor:
    """The mask as ``(N or 1, 1, H, W)`` floats, checked."""
    if not isinstance(mask, Tensor):
        mask = torch.as_tensor(mask)
    if mask.dim() not in (2, 3):
        raise ValueError(f"mask must be (H, W) or (N, H, W), got shape {tuple(mask.shape)}")
    weights = mask.detach().to(torch.float64 if mask.dtype == torch.float64 else torch.float32)
    if not bool(((weights >= 0) & (weights <= 1)).all()):
        raise ValueError("mask must be bool or hold values in [0, 1] (0 or 1 to select pixels)")
    weights = weights.reshape(-1, 1, *weights.shape[-2:])
    _check_not_empty(weights, "")
    return weights


def _mask_at(mask: Tensor, logits: Tensor, input_size: tuple[int, ...] | None) -> Tensor:
    """The mask at the logits' resolution and batch, ``(N or 1, 1, h, w)``."""
    batch, size = logits.shape[0], tuple(logits.shape[-2:])
    if mask.shape[0] not in (1, batch):
        raise ValueError(
            f"the mask holds {mask.shape[0]} examples for a batch of {batch}: pass one (H, W) "
            "mask for every example or one per example"
        )
    mask_size = tuple(mask.shape[-2:])
    if mask_size == size:
        return mask.to(logits.device)
    if mask_size != input_size:
        raise ValueError(
            f"the mask is {mask_size[0]}x{mask_size[1]}, which is neither the input's size "
            f"({'unknown' if input_size is None else 'x'.join(map(str, input_size))}) nor the "
            f"logits' ({size[0]}x{size[1]})"
        )
    resized = F.interpolate(mask.to(logits.device), size=size, mode="nearest")
    _check_not_empty(resized, f" after resizing (nearest) to the logits' {size[0]}x{size[1]}")
    return resized


def _check_not_empty(weights: Tensor, where: str) -> None:
    empty = (weights.sum(dim=(1, 2, 3)) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"the mask is empty{where} for example(s) {empty}: no pixel is selected, so the "
            "mean probability over it is undefined"
        )


__all__ = ["SegmentationScores"]
