"""Small random-init models of every transformer family a Captum user brings, and their layers.

Shared by the layout tests (``tests/core/test_layout_families.py``) and the report
(``python -m benchmarks.layouts_report``). Each :class:`Family` names its layer, the input size
it is explained at, and how a hand reshape puts the layer tensor on its grid; the float64
reference of :func:`reference_maps` evaluates the papers' equations
(``captum_camplus.testing.reference``) on that hand reshape, independently of
``captum_camplus.layouts``. Sizes are tiny (16-dim tokens, 2 blocks, 32-pixel images) so that
every family runs in well under a second on a CPU.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import open_clip
import timm
import torch
import transformers
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

import captum_camplus.testing.reference as ref
from captum_camplus import LayerGradCam, LayerGradCamPlus, LayerGradCamPlusPlus, LayerHiResCam

CLASSES = 5
TARGET = [3, 1]

#: method name -> (class, float64 reference of the paper's equation)
METHODS = {
    "Grad-CAM": (LayerGradCam, ref.grad_cam),
    "Grad-CAM+": (LayerGradCamPlus, ref.grad_cam_plus),
    "Grad-CAM++": (
        LayerGradCamPlusPlus,
        lambda A, g: ref.grad_cam_pp(A, g, form="simplified", stabilizer="clamp"),
    ),
    "HiResCAM": (LayerHiResCam, ref.hires_cam),
}


@dataclass(frozen=True)
class Family:
    """A model family's layer as the tests explain it.

    Attributes:
        build: A random-init model in eval mode.
        layer: The layer's dotted name.
        size: The input's ``(H, W)``.
        prefix: Prefix tokens to drop in the hand reshape; ``None`` for channels last.
        grid: The patch grid the layer tensor holds at ``size``.
        none_names: The ``layout=`` that the error of ``layout=None`` names.
    """

    build: Callable[[], nn.Module]
    layer: str
    size: tuple[int, int]
    prefix: int | None
    grid: tuple[int, int]
    none_names: str


def _timm(arch: str, **kwargs) -> Callable[[], nn.Module]:
    small = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2)
    return lambda: timm.create_model(
        arch, pretrained=False, num_classes=CLASSES, **{**small, **kwargs}
    )


def _timm_swin() -> nn.Module:
    return timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        num_classes=CLASSES,
        img_size=32,
        window_size=2,
        embed_dim=8,
        depths=(1, 1),
        num_heads=(1, 2),
        strict_img_size=False,
    )


def _timm_small(arch: str, **kwargs) -> Callable[[], nn.Module]:
    """A timm model at its own small config (``kwargs``), random init."""
    return lambda: timm.create_model(arch, pretrained=False, num_classes=CLASSES, **kwargs)


class ClipVisionClassifier(nn.Module):
    """A Hugging Face ``CLIPVisionModel`` (class token: ``embeddings.class_embedding``) and a
    linear head on its pooled output."""

    def __init__(self) -> None:
        super().__init__()
        config = transformers.CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
        self.clip = transformers.CLIPVisionModel(config)
        self.head = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.clip(pixel_values=x).pooler_output)


def _random_head(model: VisionTransformer) -> VisionTransformer:
    """torchvision initialises the ViT head to zero (every gradient zero): a random one here."""
    nn.init.normal_(model.heads.head.weight, std=0.5)
    return model


def _hugging_face(kind: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        if kind == "swin":
            config = transformers.SwinConfig(
                image_size=32,
                patch_size=4,
                embed_dim=8,
                depths=[1, 1],
                num_heads=[1, 2],
                window_size=2,
                num_labels=CLASSES,
            )
            return transformers.SwinForImageClassification(config)
        config_class, model_class = {
            "vit": (transformers.ViTConfig, transformers.ViTForImageClassification),
            "deit": (transformers.DeiTConfig, transformers.DeiTForImageClassification),
        }[kind]
        config = config_class(
            image_size=32,
            patch_size=8,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=CLASSES,
        )
        return model_class(config)

    return build


FAMILIES: dict[str, Family] = {
    "timm ViT": Family(
        _timm("vit_tiny_patch16_224"), "blocks.1.norm1", (32, 32), 1, (4, 4), "auto"
    ),
    "timm DeiT (distilled)": Family(
        _timm("deit_tiny_distilled_patch16_224"), "blocks.1.norm1", (32, 32), 2, (4, 4), "auto"
    ),
    "timm ViT, 4 registers": Family(
        _timm("vit_tiny_patch16_224", reg_tokens=4), "blocks.1.norm1", (32, 32), 5, (4, 4), "auto"
    ),
    "timm ViT dynamic size, 64 x 16": Family(
        _timm("vit_tiny_patch16_224", dynamic_img_size=True),
        "blocks.1.norm1",
        (64, 16),
        1,
        (8, 2),
        "auto",
    ),
    "timm ViT dynamic size, 16 x 48": Family(
        _timm("vit_tiny_patch16_224", dynamic_img_size=True),
        "blocks.1.norm1",
        (16, 48),
        1,
        (2, 6),
        "auto",
    ),
    "timm Swin, 32 x 128": Family(
        _timm_swin, "layers.1.blocks.0.norm1", (32, 128), None, (4, 16), "channels_last"
    ),
    "torchvision vit_b_16 (small)": Family(
        lambda: _random_head(
            VisionTransformer(
                image_size=32,
                patch_size=8,
                num_layers=2,
                num_heads=2,
                hidden_dim=16,
                mlp_dim=32,
                num_classes=CLASSES,
            )
        ),
        "encoder.layers.encoder_layer_1.ln_1",
        (32, 32),
        1,
        (4, 4),
        "auto",
    ),
    "torchvision swin_t (small)": Family(
        lambda: SwinTransformer(
            patch_size=[4, 4],
            embed_dim=8,
            depths=[1, 1],
            num_heads=[1, 2],
            window_size=[2, 2],
            num_classes=CLASSES,
        ),
        "features.3.0.norm1",
        (32, 64),
        None,
        (4, 8),
        "channels_last",
    ),
    "torchvision convnext_tiny (small)": Family(
        lambda: ConvNeXt(
            [CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)], num_classes=CLASSES
        ),
        "features.3.0.block.2",
        (32, 64),
        None,
        (4, 8),
        "channels_last",
    ),
    "Hugging Face ViT": Family(
        _hugging_face("vit"), "vit.layers.1.layernorm_before", (32, 32), 1, (4, 4), "auto"
    ),
    "Hugging Face DeiT": Family(
        _hugging_face("deit"), "deit.layers.1.layernorm_before", (32, 32), 2, (4, 4), "auto"
    ),
    "Hugging Face Swin, 32 x 64": Family(
        _hugging_face("swin"),
        "swin.encoder.layers.1.blocks.0.layernorm_before",
        (32, 64),
        0,
        (4, 8),
        "auto",
    ),
    "timm CaiT (class attention), main blocks": Family(
        _timm_small(
            "cait_xxs24_224", img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2
        ),
        "blocks.1.norm1",
        (32, 32),
        0,
        (4, 4),
        "auto",
    ),
    "timm XCiT (class attention), 32 x 48": Family(
        _timm_small("xcit_nano_12_p8_224", embed_dim=16, depth=2, num_heads=2),
        "blocks.1.norm1",
        (32, 48),
        0,
        (4, 6),
        "auto",
    ),
    "timm hybrid ViT (ResNet features)": Family(
        _timm_small("vit_tiny_r_s16_p8_224", img_size=64, depth=2),
        "blocks.1.norm1",
        (64, 64),
        1,
        (2, 2),
        "auto",
    ),
    "timm Twins-SVT, 64 x 96 (probe-confirmed)": Family(
        _timm_small(
            "twins_svt_small",
            embed_dims=(8, 16, 32, 64),
            depths=(1, 1, 1, 1),
            num_heads=(1, 1, 1, 1),
            wss=[2, 2, 2, 2],
        ),
        "blocks.3.0.norm1",
        (64, 96),
        0,
        (2, 3),
        "auto",
    ),
    "Hugging Face CLIPVision": Family(
        ClipVisionClassifier, "clip.encoder.layers.1.layer_norm1", (32, 32), 1, (4, 4), "auto"
    ),
    "open_clip ViT visual tower": Family(
        lambda: open_clip.model.VisionTransformer(
            image_size=32,
            patch_size=8,
            width=16,
            layers=2,
            heads=2,
            mlp_ratio=2,
            output_dim=CLASSES,
        ),
        "transformer.resblocks.1.ln_1",
        (32, 32),
        1,
        (4, 4),
        "auto",
    ),
}


class Opaque(nn.Module):
    """Runs ``inner`` under a module type that states nothing about its layout."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class Tokens(nn.Module):
    """A hand-made transformer front: ``prefix`` learned tokens, then ``side x side`` patches
    flattened, a LayerNorm (the layer), mean-pooled and classified. No layout attributes."""

    def __init__(self, prefix: int, patch: int, width: int = 6) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, width, patch, stride=patch)
        self.prefix = nn.Parameter(torch.randn(1, prefix, width))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.prefix.expand(len(x), -1, -1), patches], dim=1)
        return self.head(self.norm(tokens).mean(dim=1))


class SequenceFirst(nn.Module):
    """:class:`Tokens` whose layer (``norm``) sees the tokens sequence-first ``(T, N, D)``, as
    ``nn.MultiheadAttention`` without ``batch_first`` and older open_clip towers give them."""

    def __init__(self) -> None:
        super().__init__()
        self.front = Tokens(prefix=1, patch=8)
        self.norm = nn.LayerNorm(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.front.embed(x).flatten(2).permute(2, 0, 1)  # (T, N, D)
        return self.front.head(self.norm(tokens).mean(dim=0))


def build(name: str, seed: int = 0) -> nn.Module:
    """The family's model, random init with ``seed``, in eval mode."""
    torch.manual_seed(seed)
    return FAMILIES[name].build().eval()


def images(name: str, batch: int = 2, seed: int = 1) -> torch.Tensor:
    """A float32 batch of the family's input size."""
    return torch.randn(
        batch, 3, *FAMILIES[name].size, generator=torch.Generator().manual_seed(seed)
    )


def hand_grid(tensor: torch.Tensor, family: Family) -> np.ndarray:
    """The layer tensor on its grid ``(N, C, gh, gw)``, by a numpy reshape written here."""
    array = tensor.detach().cpu().double().numpy()
    if family.prefix is None:  # (N, gh, gw, C)
        return np.ascontiguousarray(np.transpose(array, (0, 3, 1, 2)))
    n, _, d = array.shape
    patches = array[:, family.prefix :, :].reshape(n, *family.grid, d)
    return np.ascontiguousarray(np.transpose(patches, (0, 3, 1, 2)))


def reference_maps(name: str, model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Each method's float64 map from a float64 copy of the model, on the hand reshape."""
    model64 = copy.deepcopy(model).double()
    layer = model64.get_submodule(FAMILIES[name].layer)

    class Scores(nn.Module):  # ref.capture_layer indexes a tensor of scores
        def forward(self, batch: torch.Tensor) -> torch.Tensor:
            out = model64(batch)
            return out if isinstance(out, torch.Tensor) else out.logits

    A, g = ref.capture_layer(Scores(), layer, x.double(), TARGET)
    A, g = hand_grid(A, FAMILIES[name]), hand_grid(g, FAMILIES[name])
    return {method: reference(A, g) for method, (_, reference) in METHODS.items()}


def deviation(cam: torch.Tensor, expected: np.ndarray) -> float:
    """max |cam - expected| / max |expected|."""
    return float(np.abs(cam.double().numpy() - expected).max() / np.abs(expected).max())
