"""torchvision segmentation models and object detectors for ``camplus explain``, loaded offline.

- A :class:`Segmenter` (``fcn_*``, ``deeplabv3_*``, ``lraspp_mobilenet_v3_large``) takes images
  in [0, 1] (it normalises them itself, as :class:`camplus_app.zoo.Normalized`) and returns
  torchvision's ``{"out": (N, K, H, W)}``; class 0 is the background, torchvision's convention.
- A :class:`Detector` (``fasterrcnn_*``, ``maskrcnn_*``, ``keypointrcnn_*``, ``retinanet_*``,
  ``fcos_*``, ``ssd*``) is the torchvision detector itself: it takes a list of ``(3, H, W)``
  images in [0, 1] at any size and resizes and normalises them in its ``transform``.

Both need a local weights file (a state dict): the number of classes is read from it, 21 classes
get the Pascal VOC names and 91 the COCO names (shipped with torchvision, no download).

Default CAM layer: the backbone's last stage, the deepest layer with a spatial map that every
class's score depends on: ``backbone.<last>`` of a segmenter (``layer4`` of the ResNets, ``16``
of the MobileNets), ``backbone.body.<last>`` of an FPN detector (``layer4``, ``16``: the top
of the feature pyramid's input) and ``backbone.features.<last>`` of an SSD.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from camplus_app.images import check_aspect, to_rgb
from camplus_app.zoo import Normalized, _read_state_dict, load_strictly
from captum_camplus.modules import find_layer

if TYPE_CHECKING:
    from PIL.Image import Image

Task = Literal["segmentation", "detection"]

#: R-CNN's classifier in its state dict: one row per class.
_RCNN_CLASSES = "roi_heads.box_predictor.cls_score.weight"


def task_of(name: str | None) -> Task | None:
    """``"segmentation"`` or ``"detection"`` for a torchvision segmentation model or detector
    (``torchvision/`` prefix allowed), ``None`` for anything else (a classifier)."""
    if name is None or name.startswith("timm/") or Path(name).is_dir():
        return None
    from torchvision import models

    arch = name.removeprefix("torchvision/")
    if arch in models.list_models(module=models.segmentation):
        return "segmentation"
    if arch in models.list_models(module=models.detection):
        return "detection"
    return None


def _to_tensor(image: Image) -> Tensor:
    from torchvision.transforms.functional import to_tensor

    check_aspect(image)
    return to_tensor(to_rgb(image))


@dataclass(frozen=True)
class Segmenter:
    """A segmentation model with its CAM layer and class names.

    Attributes:
        name: Architecture name.
        model: Takes ``(N, 3, H, W)`` images in [0, 1], returns ``{"out": (N, K, H, W)}``.
        layer: The module whose activations the CAMs weight; ``layer_name`` its dotted name
            inside ``model.net``.
        categories: Class names; index 0 is the background.
        resize: The short side the model sees (torchvision's preset: 520).
    """

    name: str
    model: Normalized
    layer: nn.Module
    layer_name: str
    categories: list[str]
    resize: int

    @property
    def device(self) -> torch.device:
        return self.model.mean.device

    def to(self, device: str | torch.device) -> Segmenter:
        self.model.to(device)
        return self

    def original(self, image: Image) -> Tensor:
        """The image as the user sees it, ``(3, H, W)`` in [0, 1]."""
        return _to_tensor(image)

    def preprocess(self, image: Image) -> Tensor:
        """``(1, 3, h, w)`` on the model's device: the short side resized to :attr:`resize`
        (bilinear), the aspect ratio kept."""
        from torchvision.transforms.functional import resize

        pixels = self.original(image)
        return resize(pixels, [self.resize], antialias=True)[None].to(self.device)


@dataclass(frozen=True)
class Detector:
    """A torchvision detector with its CAM layer and class names.

    Attributes:
        name: Architecture name.
        model: The detector in eval mode.
        layer: The module whose activations the CAMs weight; ``layer_name`` its dotted name.
        categories: Class names, indexed by the detector's labels.
        background: Whether label 0 is a background class that has no boxes (R-CNN, SSD).
    """

    name: str
    model: nn.Module
    layer: nn.Module
    layer_name: str
    categories: list[str]
    background: bool

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> Detector:
        self.model.to(device)
        return self

    def preprocess(self, image: Image) -> Tensor:
        """``(3, H, W)`` in [0, 1] at the image's own size, on the detector's device (the
        detector resizes it itself)."""
        return _to_tensor(image).to(self.device)

    def keep_scores_from(self, threshold: float) -> None:
        """Make the detector return every detection scoring at least ``threshold`` (its own
        threshold, e.g. Faster R-CNN's 0.05, would drop weaker ones)."""
        heads = getattr(self.model, "roi_heads", None)  # R-CNN's; one-stage detectors' own
        owner = heads if isinstance(heads, nn.Module) else self.model
        if not hasattr(owner, "score_thresh"):
            raise ValueError(f"{self.name} has no score threshold to set")
        setattr(owner, "score_thresh", threshold)  # noqa: B010 (a plain attribute, not a module)


def check_layer(model: Segmenter | Detector) -> None:
    """Run the model once on a blank image and refuse a CAM layer whose output is not an
    ``(N, C, H, W)`` map with more than one position (a linear layer of a head, a pooling, a
    module the forward never calls), before any work starts.

    Raises:
        ValueError: naming the layer, what it gave and the way out.
    """
    seen: list[object] = []
    handle = model.layer.register_forward_hook(lambda module, args, output: seen.append(output))
    blank = torch.full((3, 128, 128), 0.5, device=model.device)
    try:
        with torch.no_grad():
            model.model(blank[None]) if isinstance(model, Segmenter) else model.model([blank])
    finally:
        handle.remove()
    if not seen:
        raise ValueError(
            f"layer {model.layer_name!r} of {model.name} is never called by its forward: pass "
            "another --layer"
        )
    output = seen[0]
    if not isinstance(output, Tensor) or output.dim() != 4 or output[0, 0].numel() == 1:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(
            f"layer {model.layer_name!r} of {model.name} gives {shape}, not an (N, C, H, W) map: "
            "pass a convolutional --layer (default: the backbone's last stage)"
        )


def load_segmenter(name: str, weights: str | Path | None, layer: str | None = None) -> Segmenter:
    """A torchvision segmentation model with a local weights file (nothing is downloaded).

    Raises:
        ValueError: no weights, weights that do not fit the architecture, an unknown layer.
        FileNotFoundError: a missing weights file.
    """
    from torchvision.models import get_model_weights

    arch = name.removeprefix("torchvision/")
    state = _state(arch, weights)
    num_classes = _last_rows(state, "classifier.", "segmentation classifier")
    aux = any(key.startswith("aux_classifier.") for key in state)
    net = _build(arch, weights, state, num_classes=num_classes, aux_loss=aux)
    layer_name = layer or f"backbone.{_last_child(net, 'backbone')}"
    preset = get_model_weights(arch).DEFAULT.transforms()
    model = Normalized(net, preset.mean, preset.std).eval()
    return Segmenter(
        name=arch,
        model=model,
        layer=find_layer(net, layer_name),
        layer_name=layer_name,
        categories=_categories(num_classes, "segmentation"),
        resize=int(preset.resize_size[0]),
    )


def load_detector(name: str, weights: str | Path | None, layer: str | None = None) -> Detector:
    """A torchvision detector with a local weights file (nothing is downloaded).

    Raises:
        ValueError: no weights, weights that do not fit the architecture, an unknown layer.
        FileNotFoundError: a missing weights file.
    """
    arch = name.removeprefix("torchvision/")
    state = _state(arch, weights)
    num_classes = _detector_classes(state)
    net = _build(arch, weights, state, num_classes=num_classes)
    if layer is None:
        stages = "backbone.body" if hasattr(net.backbone, "body") else "backbone.features"
        layer = f"{stages}.{_last_child(net, stages)}"
    background = hasattr(net, "roi_heads") or type(net).__name__ == "SSD"
    categories = _categories(num_classes, "detection")
    if background and num_classes != 91:
        categories[0] = "background"
    return Detector(
        name=arch,
        model=net,
        layer=find_layer(net, layer),
        layer_name=layer,
        categories=categories,
        background=background,
    )


def _state(arch: str, weights: str | Path | None) -> dict[str, Tensor]:
    if weights is None:
        raise ValueError(
            f"no weights for {arch!r}: pass a local weights file with --weights (nothing is "
            "downloaded)"
        )
    return _read_state_dict(Path(weights))


def _build(
    arch: str, weights: str | Path | None, state: dict[str, Tensor], **options: object
) -> nn.Module:
    from torchvision import models

    net = models.get_model(arch, weights=None, weights_backbone=None, **options)
    load_strictly(
        net,
        state,
        f"the weights in {weights} do not fit torchvision {arch!r}",
        "check the architecture name (the class count is read from the weights)",
    )
    return net.eval()


def _last_rows(state: dict[str, Tensor], prefix: str, what: str) -> int:
    """Output channels of the last 1x1 convolution under ``prefix``: the class count."""
    rows = [
        v.shape[0]
        for k, v in state.items()
        if k.startswith(prefix) and k.endswith("weight") and v.dim() == 4 and v.shape[-2:] == (1, 1)
    ]
    if not rows:
        raise ValueError(f"the weights have no {what} (no 1x1 convolution under {prefix!r})")
    return int(rows[-1])


def _detector_classes(state: dict[str, Tensor]) -> int:
    """R-CNN: the classifier's rows. One-stage detectors: the classification head's output
    channels over its anchors (the regression head's channels / 4), read from their first
    convolution (SSD: per feature map) or from ``cls_logits`` / ``bbox_reg``."""
    if _RCNN_CLASSES in state:
        return int(state[_RCNN_CLASSES].shape[0])

    def channels(prefix: str) -> int | None:
        found = [
            v.shape[0]
            for k, v in state.items()
            if k.startswith(prefix) and k.endswith("weight") and v.dim() == 4 and v.shape[1] > 1
        ]
        return int(found[-1]) if found else None

    for classes, boxes in (
        ("head.classification_head.cls_logits.", "head.regression_head.bbox_reg."),
        ("head.classification_head.module_list.0.", "head.regression_head.module_list.0."),
    ):
        scores, corners = channels(classes), channels(boxes)
        if scores is not None and corners is not None:
            return scores * 4 // corners
    raise ValueError("the weights have no detection head (no R-CNN, RetinaNet, FCOS or SSD head)")


def _last_child(net: nn.Module, path: str) -> str:
    module = find_layer(net, path)
    names = [name for name, _ in module.named_children()]
    if not names:
        raise ValueError(f"{path} of {type(net).__name__} has no stages: pass --layer")
    return names[-1]


def _categories(num_classes: int, task: Task) -> list[str]:
    """Pascal VOC names for 21 segmentation classes, COCO names for 91 detection classes."""
    if task == "segmentation" and num_classes == 21:
        from torchvision.models.segmentation import FCN_ResNet50_Weights

        return list(FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1.meta["categories"])
    if task == "detection" and num_classes == 91:
        from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

        return list(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])
    names = [f"class {i}" for i in range(num_classes)]
    if task == "segmentation":
        names[0] = "background"
    return names


__all__ = [
    "Detector",
    "check_layer",
    "Segmenter",
    "Task",
    "load_detector",
    "load_segmenter",
    "task_of",
]
