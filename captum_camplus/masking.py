"""Walls: stop a classifier head from seeing part of a feature map, and find what it cannot see.

Taimeskhanov et al., section 3.1 builds a model that provably cannot use the bottom of its input:
the weights from the bottom rows of the last feature map to the first dense layer are set to zero
and kept at zero in training (Taimeskhanov et al., figure 4). :func:`mask_linear_input` does that
for any head that starts with ``flatten`` and ``nn.Linear``; :func:`unseen_region` traces the wall
back through convolutions and pooling to the input pixels the model cannot see, the "dead zone" of
Taimeskhanov et al., eq. 7.

References:
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD,
  arXiv:2404.01964.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

#: Modules that act on each position separately, so a position's receptive field is itself.
#: (BatchNorm counts only in eval mode; in training its statistics mix all positions.)
POINTWISE = (
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Dropout,
    nn.Dropout2d,
    nn.BatchNorm2d,
)


class ViewMask(nn.Module):
    """Parametrization of a linear layer's weight that keeps the columns of unseen positions at 0.

    Registered with :func:`torch.nn.utils.parametrize.register_parametrization`, so the weight the
    layer uses is always ``original`` with those columns filled with exact zeros: their gradient is
    zero and no optimizer step (momentum, weight decay, Adam) can make them non-zero.

    Attributes:
        unseen: Boolean ``(H, W)`` map of the positions of the flattened feature map the layer
            cannot see (True = unseen), for every channel.
        feature_shape: ``(C, H, W)`` of the tensor that the head flattens.
    """

    unseen: Tensor
    hidden: Tensor

    def __init__(self, feature_shape: tuple[int, int, int], unseen: Tensor) -> None:
        super().__init__()
        self.feature_shape = feature_shape
        channels = feature_shape[0]
        self.register_buffer("unseen", unseen.clone())
        # Column c*H*W + h*W + w of the weight reads position (h, w) of channel c (nn.Flatten).
        self.register_buffer("hidden", unseen.expand(channels, *unseen.shape).reshape(1, -1))

    def forward(self, weight: Tensor) -> Tensor:
        return weight.masked_fill(self.hidden, 0.0)

    def right_inverse(self, weight: Tensor) -> Tensor:
        # Assigning a weight (and registering the mask) stores it already masked.
        return weight.masked_fill(self.hidden, 0.0)


def bottom_rows(height: int, width: int, rows: int) -> Tensor:
    """Boolean ``(height, width)`` region of the last ``rows`` rows (the band of figure 4)."""
    if not 0 < rows <= height:
        raise ValueError(f"rows must be in 1..{height} for a map of height {height}, got {rows}")
    region = torch.zeros(height, width, dtype=torch.bool)
    region[height - rows :] = True
    return region


def mask_linear_input(linear: nn.Linear, feature_shape: Sequence[int], unseen: Tensor) -> ViewMask:
    """Wall off part of the feature map that a ``flatten -> linear`` head reads (section 3.1).

    The weights from every channel at the ``unseen`` positions to ``linear`` are set to zero and
    kept there during training, through a parametrization of ``linear.weight``. The model's output
    then does not depend on the feature map at those positions, whatever the input.

    Args:
        linear: The first linear layer of the head, fed with ``flatten(features, 1)``.
        feature_shape: ``(C, H, W)`` of the features before flattening.
        unseen: Boolean ``(H, W)`` tensor, True where the head must not see (e.g.
            :func:`bottom_rows`).

    Returns:
        The :class:`ViewMask` registered on ``linear.weight``; undo it with
        ``torch.nn.utils.parametrize.remove_parametrizations(linear, "weight")``.
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"expected an nn.Linear to mask, got {type(linear).__name__}")
    if parametrize.is_parametrized(linear, "weight"):
        raise ValueError("the weight of this linear layer is already parametrized (masked?)")
    feature_shape = tuple(int(s) for s in feature_shape)
    if len(feature_shape) != 3:
        raise ValueError(f"feature_shape must be (C, H, W), got {feature_shape}")
    if math.prod(feature_shape) != linear.in_features:
        raise ValueError(
            f"feature_shape {feature_shape} has {math.prod(feature_shape)} values but the linear "
            f"layer reads {linear.in_features}: pass the shape of the tensor the head flattens"
        )
    if not isinstance(unseen, Tensor) or unseen.dtype != torch.bool:
        raise TypeError("unseen must be a boolean tensor (True where the head must not see)")
    if tuple(unseen.shape) != feature_shape[1:]:
        raise ValueError(
            f"unseen has shape {tuple(unseen.shape)}, expected the map size {feature_shape[1:]}"
        )
    if bool(unseen.all()):
        raise ValueError("unseen covers the whole map: the head would see nothing")
    mask = ViewMask(feature_shape, unseen.to(linear.weight.device))
    parametrize.register_parametrization(linear, "weight", mask)
    return mask


def unseen_region(
    layers: nn.Module | Iterable[nn.Module], input_size: Sequence[int], unseen: Tensor
) -> Tensor:
    """Positions of the input of ``layers`` that no seen position of their output depends on.

    The receptive field is traced back exactly as Taimeskhanov et al., section 3.1 does: an input
    position is seen if some window of a convolution or pooling that produces a seen output position
    contains it (zero padding reads nothing). The model cannot see the returned region whatever its
    weights, because every path from it ends at a walled-off position.

    Args:
        layers: The modules from the input to the map, in call order (an ``nn.Sequential`` or a
            list). Supported: ``Conv2d`` (zero padding), ``MaxPool2d``, ``AvgPool2d``, adaptive
            pooling, and position-wise modules (activations, dropout, ``BatchNorm2d`` in eval).
        input_size: ``(H, W)`` of the input of ``layers``.
        unseen: Boolean ``(h, w)`` region of the output of ``layers`` that is unseen.

    Returns:
        Boolean ``(H, W)`` tensor, True where the input cannot influence the seen outputs.
    """
    flat = _flatten_layers(layers)
    if len(input_size) != 2:
        raise ValueError(f"input_size must be (H, W), got {tuple(int(s) for s in input_size)}")
    sizes = [_pair(input_size)]
    reads = []
    for layer in flat:
        axes = _reads_per_axis(layer, sizes[-1])
        reads.append(axes)
        sizes.append((axes[0].shape[0], axes[1].shape[0]))
    if tuple(unseen.shape) != sizes[-1]:
        raise ValueError(
            f"unseen has shape {tuple(unseen.shape)} but the layers map {sizes[0]} to {sizes[-1]}"
        )
    seen = (~unseen.bool()).double().cpu()
    for rows, cols in reversed(reads):
        seen = ((rows.T @ seen @ cols) > 0).double()
    return seen == 0


def _flatten_layers(layers: nn.Module | Iterable[nn.Module]) -> list[nn.Module]:
    if isinstance(layers, nn.Sequential):
        layers = list(layers)
    elif isinstance(layers, nn.Module):
        layers = [layers]
    flat: list[nn.Module] = []
    for layer in layers:
        flat.extend(_flatten_layers(layer) if isinstance(layer, nn.Sequential) else [layer])
    return flat


def _reads_per_axis(layer: nn.Module, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """``(rows, cols)``: matrices ``R[i, r] = 1`` if output index i reads input index r."""
    if isinstance(layer, POINTWISE):
        if isinstance(layer, nn.BatchNorm2d) and layer.training:
            raise ValueError("BatchNorm2d in training mode mixes positions: call model.eval()")
        return torch.eye(size[0], dtype=torch.float64), torch.eye(size[1], dtype=torch.float64)
    if isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros":
            raise ValueError(f"unseen_region supports zero padding only, got {layer.padding_mode}")
        kernel, stride = _pair(layer.kernel_size), _pair(layer.stride)
        dilation = _pair(layer.dilation)
        if layer.padding == "same":  # stride 1, output size n; PyTorch pads (k - 1) d // 2 before
            return _axes(
                lambda i: _window_reads(
                    kernel[i],
                    1,
                    dilation[i] * (kernel[i] - 1) // 2,
                    dilation[i],
                    size[i],
                    ceil=False,
                    out=size[i],
                )
            )
        padding = (0, 0) if isinstance(layer.padding, str) else _pair(layer.padding)  # "valid"
        return _axes(
            lambda i: _window_reads(
                kernel[i], stride[i], padding[i], dilation[i], size[i], ceil=False
            )
        )
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        kernel, stride = _pair(layer.kernel_size), _pair(layer.stride or layer.kernel_size)
        padding = _pair(layer.padding)
        dilation = _pair(layer.dilation if isinstance(layer, nn.MaxPool2d) else 1)
        ceil = layer.ceil_mode
        return _axes(
            lambda i: _window_reads(kernel[i], stride[i], padding[i], dilation[i], size[i], ceil)
        )
    if isinstance(layer, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        wanted = layer.output_size  # an int, or None ("as the input") per axis
        rows, cols = (wanted, wanted) if wanted is None or isinstance(wanted, int) else wanted
        out = (size[0] if rows is None else rows, size[1] if cols is None else cols)
        return _axes(lambda i: _adaptive_reads(out[i], size[i]))
    raise TypeError(
        f"cannot trace the receptive field through {type(layer).__name__}: pass a chain of "
        "Conv2d, pooling and position-wise layers, or check the region empirically with "
        "max_output_change"
    )


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (int(first), int(second))


def _axes(reads: Callable[[int], Tensor]) -> tuple[Tensor, Tensor]:
    """``(reads(0), reads(1))``: the rows' matrix, then the columns'."""
    return reads(0), reads(1)


def _window_reads(
    k: int, s: int, p: int, d: int, n: int, ceil: bool, out: int | None = None
) -> Tensor:
    """Windows of ``k`` taps ``d`` apart, every ``s``, after ``p`` padding before the input."""
    if out is None:
        span = n + 2 * p - d * (k - 1) - 1
        if span < 0:
            raise ValueError(f"a window of size {k} (dilation {d}) does not fit a map of size {n}")
        out = (-(-span // s) if ceil else span // s) + 1
        if ceil and (out - 1) * s >= n + p:  # PyTorch drops a last window starting in the padding
            out -= 1
    reads = torch.zeros(out, n, dtype=torch.float64)
    for i in range(out):
        for j in range(k):
            r = i * s - p + j * d
            if 0 <= r < n:
                reads[i, r] = 1.0
    return reads


def _adaptive_reads(out: int, n: int) -> Tensor:
    reads = torch.zeros(out, n, dtype=torch.float64)
    for i in range(out):
        reads[i, (i * n) // out : -(-((i + 1) * n) // out)] = 1.0
    return reads


@torch.no_grad()
def max_output_change(
    model: nn.Module,
    inputs: Tensor,
    region: Tensor,
    trials: int = 4,
    generator: torch.Generator | None = None,
) -> float:
    """Largest change of the model's output when the input is redrawn inside ``region``.

    An empirical check of a wall: for a region the model cannot see, the answer is exactly 0.

    Args:
        model: The model (put it in eval mode first if it has dropout or batch norm).
        inputs: ``(N, C, H, W)`` inputs.
        region: Boolean ``(H, W)`` region to redraw with standard normal noise.
        trials: Number of random redraws.
        generator: Random generator for the noise.
    """
    if tuple(region.shape) != tuple(inputs.shape[-2:]):
        raise ValueError(
            f"region has shape {tuple(region.shape)}, expected the input size "
            f"{tuple(inputs.shape[-2:])}"
        )
    region = region.to(inputs.device)
    reference = model(inputs)
    change = torch.zeros((), dtype=torch.float64, device=inputs.device)
    for _ in range(trials):
        noise = torch.randn(inputs.shape, generator=generator, dtype=inputs.dtype)
        changed = torch.where(region, noise.to(inputs.device), inputs)
        change = torch.maximum(change, (model(changed) - reference).abs().max().double())
    return float(change)
