"""Looking things up in a model: a layer by its dotted name, and the model's device."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import nn


def find_layer(model: nn.Module, layer: nn.Module | str) -> nn.Module:
    """The layer itself, or the submodule of ``model`` called ``layer`` (dotted, e.g.
    ``"layer4.1.conv2"``), with an error that names candidates when there is none."""
    if isinstance(layer, nn.Module):
        return layer
    if not isinstance(layer, str):
        raise TypeError(f"layer must be an nn.Module or its name, got {type(layer).__name__}")
    try:
        return model.get_submodule(layer)
    except AttributeError:
        candidates = ", ".join(name for name, _ in list(model.named_children())[-6:])
        raise ValueError(
            f"the model has no layer named {layer!r}: give a dotted module name such as "
            f"{candidates}"
        ) from None


def module_device(
    model: nn.Module | Callable, fallback: torch.device | str = "cpu"
) -> torch.device:
    """The device of the model's first parameter or buffer (``fallback`` for none, or for a
    function that is not a module)."""
    if isinstance(model, nn.Module):
        tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
        if tensor is not None:
            return tensor.device
    return torch.device(fallback)


__all__ = ["find_layer", "module_device"]
