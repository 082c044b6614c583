"""What the metrics assume of the model, made true or checked: they never change the model, feed
it inputs of its own dtype, and never put a second softmax on outputs that are probabilities.

- A model left in ``train()`` mode is evaluated in eval mode (BatchNorm running statistics, not
  batch statistics; no dropout) and every submodule's own mode is restored afterwards, so the
  model's state, running statistics included, is unchanged: the core's
  :func:`captum_camplus.utils.evaluation_mode`, which the scoring modules use.
- :func:`as_model_input`: inputs as a tensor on the model's device in its floating dtype (Quantus'
  own fixtures give float64 arrays; a float32 model cannot take them).
- :func:`check_not_probabilities`: the papers' scores are softmax probabilities of logits; a
  model that already ends in a softmax would get a second one, which squashes every score
  towards ``1 / classes`` without a word. Outputs whose rows are non-negative and sum to 1 are
  refused with the options that score them as they are (``scores="probabilities"`` or
  ``"raw"``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from captum_camplus.utils import module_device

R = TypeVar("R")


def model_dtype(model: nn.Module | Callable[..., Any]) -> torch.dtype:
    """The floating dtype of the model's first floating parameter or buffer (float32 if none)."""
    if isinstance(model, nn.Module):
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            if tensor.is_floating_point():
                return tensor.dtype
    return torch.float32


def as_model_input(inputs: np.ndarray | Tensor, model: nn.Module | Callable[..., Any]) -> Tensor:
    """``inputs`` as a tensor on the model's device, in the model's floating dtype.

    Integer images (uint8 pixels) become floats with the same values, as before.

    Raises:
        ValueError: for NaN or inf inputs (their scores are undefined), values beyond the
            model's dtype (float64 data past 65504 for a float16 model), or images given
            channels last (``(N, H, W, C)``) to a model whose first convolution takes channels
            first.
    """
    x = inputs if isinstance(inputs, Tensor) else torch.as_tensor(np.asarray(inputs))
    check_channels_first(x, model)
    finite_before = not x.is_floating_point() or bool(torch.isfinite(x).all())
    x = x.to(device=module_device(model), dtype=model_dtype(model))
    if not (finite_before and bool(torch.isfinite(x).all())):
        what = "contain NaN or inf" if not finite_before else f"overflow the model's {x.dtype}"
        raise ValueError(f"the inputs {what}: the model's scores of them are undefined")
    return x


def check_channels_first(x: Tensor, model: nn.Module | Callable[..., Any]) -> None:
    """Refuse a batch of images given channels last to a model whose first 2-D convolution
    takes channels first: the model would fail deep inside with a convolution's shape error."""
    if x.dim() != 4 or not isinstance(model, nn.Module):
        return
    name, conv = next(
        ((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), ("", None)
    )
    if conv is None or x.shape[1] == conv.in_channels or x.shape[-1] != conv.in_channels:
        return
    raise ValueError(
        f"the inputs of shape {tuple(x.shape)} look channels last (N, H, W, C), but the model's "
        f"first convolution ({name or 'the model'}, in_channels={conv.in_channels}) takes "
        "channels first (N, C, H, W): pass them channels first (np.moveaxis(x, -1, 1) or "
        "x.permute(0, 3, 1, 2)), e.g. x_batch for quantus.evaluate"
    )


def check_not_probabilities(outputs: Tensor) -> None:
    """Refuse ``(N, classes)`` outputs whose rows already look like softmax probabilities.

    The tolerance on the row sums follows the dtype (``max(1e-4, 2 eps)``: 1.6e-2 for bfloat16).
    Logits practically never satisfy it; log-probabilities (rows <= 0) are fine, since a softmax
    of them gives the probabilities back.
    """
    if outputs.dim() != 2 or outputs.shape[1] < 2 or outputs.shape[0] == 0:
        return
    scores = outputs.detach()
    tolerance = max(1e-4, 2 * torch.finfo(scores.dtype).eps)
    sums = scores.sum(dim=1, dtype=torch.float64)
    if bool((scores >= 0).all() & ((sums - 1).abs() <= tolerance).all()):
        raise ValueError(
            "the model's outputs already look like probabilities (every row non-negative and "
            "summing to 1), so a softmax on top would squash them: score them as they are with "
            "scores='probabilities' (or scores='raw'; and take CAMs of them with "
            "maps_from='pre-softmax', the gradients of the model's own outputs), or pass a model "
            "that returns logits"
        )


__all__ = [
    "as_model_input",
    "check_channels_first",
    "check_not_probabilities",
    "model_dtype",
]
