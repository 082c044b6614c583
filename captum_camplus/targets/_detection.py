r"""Object-detector outputs as ``(N, B)`` scores of reference boxes, for CAM methods.

:class:`DetectionScores` wraps a torchvision-style detector (Faster/Mask R-CNN, RetinaNet, FCOS,
SSD: a module that in eval mode takes a list of ``(3, H, W)`` images and returns one dict per
image with ``boxes (D, 4)``, ``scores (D,)`` and ``labels (D,)``, boxes in the image's own
coordinates) so that Captum's ``target=b`` explains reference box ``b``::

    scores = DetectionScores(detector, boxes, labels)
    maps = LayerGradCam(scores, detector.backbone.body["16"]).attribute(images, target=0)
    heatmaps = scores.image_maps(maps, images)  # (N, 1, H, W) on the user's images

The detector is duck-typed: this module imports no torchvision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_camplus.maps import require_spatial, upsample_and_normalize
from captum_camplus.modules import evaluation_mode
from captum_camplus.precision import working_precision

__all__ = ["DetectionScores", "box_iou"]

_KEYS = ("boxes", "scores", "labels")


def box_iou(boxes: Tensor, others: Tensor) -> Tensor:
    r"""Pairwise intersection over union of ``(B, 4)`` and ``(D, 4)`` boxes ``(x1, y1, x2, y2)``.

    .. math:: \mathrm{IoU}(a, b) = \frac{|a \cap b|}{|a| + |b| - |a \cap b|}

    Returns ``(B, D)``; 0 where the union is empty (two degenerate boxes).
    """
    top_left = torch.maximum(boxes[:, None, :2], others[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], others[None, :, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    area = (boxes[:, 2:] - boxes[:, :2]).prod(dim=-1)
    other_area = (others[:, 2:] - others[:, :2]).prod(dim=-1)
    union = area[:, None] + other_area[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1e-30), torch.zeros_like(union))


def _class_count(detector: nn.Module) -> tuple[int | None, bool]:
    """The detector's class count (labels lie in ``[0, count)``) and whether 0 is background.

    Read from ``roi_heads.box_predictor.cls_score.out_features`` (R-CNN, background 0) or
    ``head.classification_head.num_classes`` / ``num_columns`` (RetinaNet, FCOS, SSD); ``None``
    when the detector exposes neither.
    """
    cls_score = getattr(
        getattr(getattr(detector, "roi_heads", None), "box_predictor", None), "cls_score", None
    )
    count = getattr(cls_score, "out_features", None)
    if isinstance(count, int):
        return count, True
    head = getattr(getattr(detector, "head", None), "classification_head", None)
    for name in ("num_classes", "num_columns"):
        count = getattr(head, name, None)
        if isinstance(count, int):
            return count, False
    return None, False


class DetectionScores(nn.Module):
    r"""A detector's score for each reference box, as an ``(N, B)`` output for ``target=b``.

    For image :math:`n` and reference box :math:`r_b` of label :math:`\ell_b`, among the
    detections :math:`d` of that image with label :math:`\ell_b` and
    :math:`\mathrm{IoU}(r_b, d) > \tau` (``iou_threshold``), the matched detection is

    .. math:: d^\ast = \operatorname*{arg\,max}_d \; s_d \cdot \mathrm{IoU}(r_b, d),
        \qquad \mathrm{output}[n, b] = s_{d^\ast},

    the detector's own score of :math:`d^\ast` (a probability for torchvision's detectors), and a
    differentiable 0 when no detection qualifies. Ties go to the detector's first detection.
    The selection is not differentiated; the gradient is that of :math:`s_{d^\ast}`, which flows
    back through the detector's heads to its backbone, so its layers can be hooked.

    Only the detections the detector returns exist for the wrapper: torchvision's detectors drop
    boxes under their own ``box_score_thresh`` (or ``score_thresh``), after non-maximum
    suppression and past ``detections_per_img``; build the detector with ``box_score_thresh=0``
    to score weak boxes too.

    The detector is run in eval mode (a detector in training mode takes targets and returns
    losses): if it, or this module, is in training mode, it is switched to eval mode for the
    call and each submodule's own mode is restored after.

    Args:
        detector: The detector, held as the submodule ``detector``.
        boxes: Reference boxes ``(x1, y1, x2, y2)`` in the user's image coordinates, ``(B, 4)``
            (the same for every image) or ``(N, B, 4)``.
        labels: Their class labels, ``(B,)`` or ``(N, B)`` integers; refused if negative, or
            out of range where the detector exposes its class count (``0`` is R-CNN's
            background, which has no detections, and is refused for R-CNN detectors).
        iou_threshold: A detection matches only if its IoU with the reference box is above this
            (default 0: any overlap).

    Raises:
        ValueError: for boxes or labels of the wrong shape, type or value.
    """

    #: The scores are the detector's own box scores, probabilities: the metrics take them as
    #: they are (``metrics.confidence``, ``scores="probabilities"``), with no softmax on top.
    scores_kind: ClassVar[str] = "probabilities"

    def __init__(
        self, detector: nn.Module, boxes: Tensor, labels: Tensor, iou_threshold: float = 0.0
    ) -> None:
        super().__init__()
        if not isinstance(detector, nn.Module):
            raise TypeError(f"detector must be an nn.Module, got {type(detector).__name__}")
        if not 0.0 <= float(iou_threshold) < 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1), got {iou_threshold}")
        self.detector = detector
        self.iou_threshold = float(iou_threshold)
        self.boxes = _check_boxes(boxes)
        self.labels = _check_labels(labels, self.boxes, detector)

    @property
    def num_boxes(self) -> int:
        """``B``, the number of reference boxes per image (the output's second dimension)."""
        return int(self.boxes.shape[-2])

    def forward(self, inputs: Tensor) -> Tensor:
        """The ``(N, B)`` scores of the reference boxes in the ``(N, 3, H, W)`` images."""
        if not isinstance(inputs, Tensor) or inputs.dim() != 4:
            shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
            raise ValueError(f"inputs must be a (N, 3, H, W) tensor of images, got {shape}")
        count = inputs.shape[0]
        if self.boxes.dim() == 3 and self.boxes.shape[0] != count:
            raise ValueError(
                f"the reference boxes are given per image for {self.boxes.shape[0]} images "
                f"(shape {tuple(self.boxes.shape)}) but the batch has {count} images"
            )
        with evaluation_mode(self.detector):
            detections = self.detector(list(inputs.unbind(0)))
        detections = _check_detections(detections, count)
        return torch.stack(
            [self._image_scores(n, found) for n, found in enumerate(detections)], dim=0
        )

    def _image_scores(self, index: int, found: Mapping[str, Tensor]) -> Tensor:
        scores = found["scores"]
        refs = self.boxes[index] if self.boxes.dim() == 3 else self.boxes
        labels = self.labels[index] if self.labels.dim() == 2 else self.labels
        if scores.numel() == 0:
            return scores.sum().expand(self.num_boxes) * 0  # differentiable zeros
        with torch.no_grad():
            boxes = found["boxes"].detach().double()
            iou = box_iou(refs.to(boxes.device, torch.float64), boxes)
            same = labels.to(found["labels"].device)[:, None] == found["labels"][None, :]
            allowed = same & (iou > self.iou_threshold)
            key = torch.where(allowed, scores.detach().double()[None, :] * iou, -1.0)
            best = key.argmax(dim=1)
            matched = allowed.any(dim=1)
        chosen = scores[best]
        return torch.where(matched, chosen, chosen * 0)

    def image_maps(self, layer_maps: Tensor, inputs: Tensor) -> Tensor:
        """Layer maps on the detector's canvas, brought onto the user's images.

        torchvision's ``GeneralizedRCNNTransform`` resizes each image so its short side is
        ``min_size`` (capped by ``max_size``), then pads the batch bottom and right to a multiple
        of ``size_divisible``: a layer map covers that padded canvas. Each map is upsampled to
        the canvas (bilinear), cropped to the image's resized region, then resized to the image
        and min-max normalised by :func:`~captum_camplus.maps.upsample_and_normalize`. The sizes
        are read from ``detector.transform(images)`` (``image_sizes`` and ``tensors.shape``), run
        in eval mode without gradients.

        Args:
            layer_maps: ``(N, 1, h, w)`` maps, e.g. from ``LayerGradCam(...).attribute``.
            inputs: The ``(N, 3, H, W)`` images they explain (one size for the batch).

        Returns:
            ``(N, 1, H, W)`` maps in [0, 1].

        Raises:
            ValueError: if the detector has no ``transform`` giving ``image_sizes`` and
                ``tensors``, or the maps and images disagree.
        """
        require_spatial(layer_maps)
        if layer_maps.dim() != 4 or not isinstance(inputs, Tensor) or inputs.dim() != 4:
            raise ValueError(
                "image_maps takes (N, C, h, w) maps and (N, 3, H, W) images, got maps of shape "
                f"{tuple(layer_maps.shape)} and images of shape "
                f"{tuple(getattr(inputs, 'shape', ()))}"
            )
        if layer_maps.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"{layer_maps.shape[0]} maps for {inputs.shape[0]} images: one map per image"
            )
        sizes, canvas = self._canvas(inputs)
        working = working_precision(layer_maps)
        on_canvas = F.interpolate(working, size=canvas, mode="bilinear", align_corners=False)
        return torch.cat(
            [
                upsample_and_normalize(
                    on_canvas[n : n + 1, :, : sizes[n][0], : sizes[n][1]], inputs.shape[-2:]
                )
                for n in range(inputs.shape[0])
            ]
        )

    def _canvas(self, inputs: Tensor) -> tuple[list[tuple[int, int]], tuple[int, int]]:
        """Each image's resized size and the padded canvas size, from ``detector.transform``."""
        transform = getattr(self.detector, "transform", None)
        if not callable(transform):
            raise ValueError(
                f"image_maps needs the detector's `transform` (torchvision's "
                f"GeneralizedRCNNTransform); {type(self.detector).__name__} has none"
            )
        with torch.no_grad(), evaluation_mode(self.detector):
            transformed = transform(list(inputs.detach().unbind(0)))
        image_list = transformed[0] if isinstance(transformed, tuple) else transformed
        sizes = getattr(image_list, "image_sizes", None)
        tensors = getattr(image_list, "tensors", None)
        if not isinstance(tensors, Tensor) or not isinstance(sizes, Sequence):
            raise ValueError(
                "image_maps needs detector.transform(images) to return an ImageList with "
                f"`image_sizes` and `tensors`, got {type(image_list).__name__}"
            )
        canvas = (int(tensors.shape[-2]), int(tensors.shape[-1]))
        return [(int(h), int(w)) for h, w in sizes], canvas


def _check_boxes(boxes: Any) -> Tensor:
    if not isinstance(boxes, Tensor):
        boxes = torch.as_tensor(boxes)
    if boxes.dim() not in (2, 3) or boxes.shape[-1] != 4:
        raise ValueError(
            f"boxes must be (B, 4) or (N, B, 4) corners (x1, y1, x2, y2), got shape "
            f"{tuple(boxes.shape)}"
        )
    if boxes.is_complex() or boxes.dtype == torch.bool:
        raise ValueError(f"boxes must be real coordinates, got dtype {boxes.dtype}")
    boxes = boxes.detach().double()
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError("boxes contain NaN or inf coordinates")
    if bool((boxes[..., 2:] < boxes[..., :2]).any()):
        raise ValueError("boxes must be (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2")
    return boxes


def _check_labels(labels: Any, boxes: Tensor, detector: nn.Module) -> Tensor:
    if not isinstance(labels, Tensor):
        labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    expected = {tuple(boxes.shape[-2:-1]), tuple(boxes.shape[:-1])}
    if tuple(labels.shape) not in expected or (labels.dim() == 2 and boxes.dim() == 2):
        raise ValueError(
            f"labels must be (B,) or (N, B) for boxes of shape {tuple(boxes.shape)}, got shape "
            f"{tuple(labels.shape)}"
        )
    labels = labels.detach().long()
    if bool((labels < 0).any()):
        raise ValueError(f"labels must be non-negative, got {labels.min().item()}")
    count, background = _class_count(detector)
    if count is not None and bool((labels >= count).any()):
        raise ValueError(
            f"labels must be below the detector's {count} classes, got {labels.max().item()}"
        )
    if background and bool((labels == 0).any()):
        raise ValueError("label 0 is the R-CNN detector's background class: it has no detections")
    return labels


def _check_detections(detections: Any, count: int) -> list[Mapping[str, Tensor]]:
    """The detector's output, refused unless it is one dict of boxes/scores/labels per image."""
    if not isinstance(detections, (list, tuple)) or len(detections) != count:
        what = type(detections).__name__
        if isinstance(detections, (list, tuple)):
            what += f" of length {len(detections)}"
        raise ValueError(
            f"the detector must return in eval mode a list of {count} dicts (one per image) with "
            f"{', '.join(_KEYS)}; it returned a {what}"
        )
    for found in detections:
        if not isinstance(found, Mapping) or not all(
            isinstance(found.get(key), Tensor) for key in _KEYS
        ):
            what = (
                f"a dict with keys {sorted(found)}"
                if isinstance(found, Mapping)
                else f"a {type(found).__name__}"
            )
            raise ValueError(
                f"the detector must return a dict of tensors {', '.join(_KEYS)} per image; it "
                f"returned {what}"
            )
        boxes, scores, labels = (found[key] for key in _KEYS)
        size = scores.shape[0] if scores.dim() == 1 else -1
        if boxes.shape != (size, 4) or labels.shape != (size,):
            raise ValueError(
                "the detector's boxes, scores and labels must be (D, 4), (D,) and (D,), got "
                f"{tuple(boxes.shape)}, {tuple(scores.shape)} and {tuple(labels.shape)}"
            )
    return list(detections)
