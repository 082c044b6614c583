"""Looking things up in a model: a layer by its dotted name, the model's device; running it
in eval mode without changing it; and how many rows a batched forward takes on a CPU."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

#: Bytes of batched input per forward when a CPU runs many forwards of one model (the metrics'
#: perturbed images, Score-CAM's masked inputs, Ablation-CAM's ablated layer tensors): eight
#: float32 images of 3 x 224 x 224. Larger batches leave the caches and run slower per row
#: (``python -m benchmarks.forward_chunks``: the bundled EfficientNet-Lite0 at 224 x 224, one
#: thread, 2.0x the time per image at 64 images as at 8); much smaller ones pay the per-call cost
#: (a cap of eight rows, tried before this one, made ``benchmarks.catalogue``'s Ablation-CAM,
#: 512 ablated rows of a 2 x 2 x 512 layer tensor, 25x slower than all at once). Accelerators
#: take as many rows as their budget allows.
CPU_FORWARD_BYTES = 8 * 3 * 224 * 224 * 4


def cpu_forward_rows(row_bytes: int) -> int:
    """Rows of ``row_bytes`` each that one CPU forward takes: :data:`CPU_FORWARD_BYTES` of
    them, at least one."""
    return max(1, CPU_FORWARD_BYTES // max(row_bytes, 1))


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


@contextlib.contextmanager
def evaluation_mode(model: nn.Module | Callable[..., Any]) -> Iterator[None]:
    """Run the block with ``model`` in eval mode, then restore each submodule's own mode (a
    function is left alone)."""
    modules = list(model.modules()) if isinstance(model, nn.Module) else []
    modes = [module.training for module in modules]
    if isinstance(model, nn.Module) and any(modes):
        model.eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.training = mode


__all__ = [
    "CPU_FORWARD_BYTES",
    "cpu_forward_rows",
    "evaluation_mode",
    "find_layer",
    "module_device",
]
