"""The benchmark's problem: a model (random init), its CAM layer, a random batch and its top
classes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class Case:
    """One benchmark problem: a model, its CAM layer, a batch and one target per example.

    For a transformer, ``layout`` is what our classes take and ``reshape_transform`` the
    pytorch-grad-cam callback that turns the layer tensor into ``(N, C, H, W)`` (also used for the
    float64 reference); both are ``None`` for a CNN.
    """

    model: nn.Module
    layer: nn.Module
    inputs: Tensor
    target: Tensor
    layout: str | None = None
    reshape_transform: Callable[[Tensor], Tensor] | None = None

    def to_grid(self, tensor: Tensor) -> Tensor:
        return tensor if self.reshape_transform is None else self.reshape_transform(tensor)


def build_case(model_name: str, batch: int, size: int, device: str, seed: int) -> Case:
    """The model in eval mode, its CAM layer, a random batch in [0, 1) and its top classes."""
    torch.manual_seed(seed)
    layout, reshape = None, None
    # the model families' packages are imported only for the model asked for (bench extra)
    if model_name in ("resnet18", "resnet50"):
        import torchvision

        model = getattr(torchvision.models, model_name)(weights=None)  # random init
        layer = model.layer4
    elif model_name == "efficientnet_lite0":
        from camplus_app.zoo import efficientnet_lite0

        classifier = efficientnet_lite0()
        model, layer = classifier.model, classifier.layer  # layer: bn2
    elif model_name == "vit_small":
        import timm

        from camplus_app.zoo import Normalized

        net = timm.create_model("vit_small_patch16_224", pretrained=False, img_size=size)
        # timm's normalisation for it (mean = std = 0.5), as the zoo applies to every model: on
        # raw [0, 1) inputs this random-init ViT gives every image the same class and maps <= 0
        config = net.pretrained_cfg
        model = Normalized(net, config["mean"], config["std"])
        layer = net.blocks[-1].norm1  # tokens (N, 1 + 14 * 14, 384) at 224 x 224
        grid = tuple(net.patch_embed.grid_size)
        reshape = functools.partial(vit_reshape_transform, prefix_tokens=1, grid=grid)
        layout = "tokens"
    else:
        raise ValueError(f"unknown model {model_name!r}")
    model = model.eval().to(device)
    inputs = torch.rand(batch, 3, size, size, device=device)
    with torch.no_grad():
        target = model(inputs).argmax(dim=1)  # each image's top class, as users explain
    return Case(model, layer, inputs, target, layout, reshape)


def vit_reshape_transform(tokens: Tensor, prefix_tokens: int, grid: tuple[int, int]) -> Tensor:
    """The ``reshape_transform`` a pytorch-grad-cam user writes for a ViT: drop the class token,
    restore the patch grid, channels first."""
    patches = tokens[:, prefix_tokens:, :]
    return patches.reshape(tokens.size(0), *grid, tokens.size(2)).permute(0, 3, 1, 2)


__all__ = ["Case", "build_case", "vit_reshape_transform"]
