"""The layout types: turn a layer tensor into the ``(N, C, *grid)`` tensor the CAM rules read.

Each named layout checks that the shapes do not contradict it (:func:`check_reading`): the
readings that fit are :func:`shape_readings`, the shape module's candidates as layouts.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

from torch import Tensor
from torch.nn import Module

from captum_camplus.layouts._model import NO_FACTS, ModelFacts, Reroll, model_facts
from captum_camplus.layouts._shapes import (
    Candidate,
    InputShape,
    candidates,
    check_batch,
    image_size,
    patch_grids,
    size_text,
    square_grid,
)

#: What ``layout=`` accepts: ``None`` (the default, channels first), a name from
#: :data:`~captum_camplus.layouts.LAYOUT_NAMES`, a :class:`Layout`, or a callable
#: ``tensor -> (N, C, *grid) tensor``.
LayoutSpec = Union[str, "Layout", Callable[[Tensor], Tensor], None]


class Layout(abc.ABC):
    """Turns a layer tensor into ``(N, C, *grid)``; applied alike to activations and gradients."""

    @abc.abstractmethod
    def __call__(self, tensor: Tensor, input_shape: InputShape = None) -> Tensor:
        """The ``(N, C, *grid)`` view of ``tensor``, or a ``ValueError`` naming the mismatch.

        ``input_shape``, the shape of the input the tensor came from, checks that the tensor's
        first dimension is the batch and gives the grid's aspect where the layout needs it.
        """


@dataclass(frozen=True)
class ChannelsFirstLayout(Layout):
    """``(N, C, *grid)`` taken as it is: convolutional layers."""

    def __call__(self, tensor: Tensor, input_shape: InputShape = None) -> Tensor:
        check_batch(tensor, input_shape)
        return tensor


@dataclass(frozen=True)
class ChannelsLastLayout(Layout):
    """``(N, *grid, C)`` to ``(N, C, *grid)``, at least two grid dims: Swin stages, ConvNeXt
    blocks."""

    def __call__(self, tensor: Tensor, input_shape: InputShape = None) -> Tensor:
        check_batch(tensor, input_shape)
        if tensor.dim() < 4:
            raise ValueError(
                f"layout 'channels_last' expects a (N, H, W, C) tensor, got shape "
                f"{tuple(tensor.shape)}; for transformer tokens (N, tokens, D) use layout='tokens'"
            )
        check_reading(self, tensor, input_shape)
        return tensor.movedim(-1, 1)


@dataclass(frozen=True)
class TokenLayout(Layout):
    """Tokens ``(N, P + prod(grid), D)`` to ``(N, D, *grid)``: ViT, DeiT, BEiT, EVA.

    The ``P`` prefix tokens (class, distillation, registers) come first, as in timm, torchvision,
    Hugging Face and open_clip, and are dropped; the patch tokens follow in row-major grid order.

    Args:
        prefix_tokens: ``P``, the number of tokens before the patch grid.
        grid: The patch grid, e.g. ``(14, 14)``; ``None`` takes the grid that the token count
            gives for the input's aspect (square without the input), for models whose grid
            follows the input size.
    """

    prefix_tokens: int
    grid: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.prefix_tokens, int) and self.prefix_tokens >= 0):
            raise ValueError(f"prefix_tokens must be an int >= 0, got {self.prefix_tokens!r}")
        if self.grid is not None:
            grid = tuple(int(size) for size in self.grid)
            if not grid or min(grid) < 1:
                raise ValueError(f"grid must be positive sizes such as (14, 14), got {self.grid}")
            object.__setattr__(self, "grid", grid)

    @classmethod
    def from_model(cls, model: Any, layer: Module | None = None) -> TokenLayout:
        """The layout of a vision transformer's token layers, from its attributes.

        The prefix count from :class:`ModelFacts` of ``model`` or, for a wrapper such as
        ``nn.Sequential(normalize, vit)`` or a lambda calling it, of the submodule that holds
        ``layer``; the grid fixed where the model's is (timm without ``dynamic_img_size``), else
        ``None`` (from the input).
        """
        facts = model_facts(model, layer)
        _refuse_row_by_row("layout='tokens'", model, facts)
        if facts.prefix_tokens is None:
            raise ValueError(
                f"layout='tokens' reads the prefix token count from the model, and "
                f"{_name(model)} has no vision transformer (timm, torchvision, Hugging Face, "
                "open_clip) that states it"
                + ("" if layer is None else " around the layer")
                + ": pass TokenLayout(prefix_tokens=1, grid=(14, 14)) with your model's numbers"
            )
        return cls(facts.prefix_tokens, facts.grid)

    def check_order(self, model: Any, layer: Module | None = None) -> None:
        """Refuse this row-by-row reading for a model that states another token order (Hiera's
        mask-unit order), where a token count that fits the grid would still put the tokens
        on the wrong cells."""
        _refuse_row_by_row(str(self), model, model_facts(model, layer))

    def __call__(self, tensor: Tensor, input_shape: InputShape = None) -> Tensor:
        check_batch(tensor, input_shape)
        if tensor.dim() != 3:
            raise ValueError(
                f"{self} expects tokens (N, tokens, D), got shape {tuple(tensor.shape)}"
                + ("; for (N, H, W, C) use layout='channels_last'" if tensor.dim() == 4 else "")
            )
        patches = tensor.shape[1] - self.prefix_tokens
        grid = self.grid if self.grid is not None else self._grid_for(patches, input_shape)
        if grid is None or patches != math.prod(grid):
            expected = (
                f"{math.prod(grid)} (grid {grid}) patch tokens"
                if grid is not None
                else "a square number of patch tokens"
                if input_shape is None or image_size(input_shape) is None
                else f"patch tokens on a grid of the {size_text(input_shape)} input"
            )
            raise ValueError(
                f"{self} expects {self.prefix_tokens} prefix tokens + {expected}, "
                f"got shape {tuple(tensor.shape)} ({tensor.shape[1]} tokens): the layer's tokens "
                "do not form the grid; pass TokenLayout(prefix_tokens=..., grid=...) that fit"
            )
        if self.grid is not None:  # a grid from the input is one of the readings already
            check_reading(self, tensor, input_shape, ModelFacts(prefix_tokens=self.prefix_tokens))
        n, _, channels = tensor.shape
        return tensor[:, self.prefix_tokens :].reshape(n, *grid, channels).movedim(-1, 1)

    @staticmethod
    def _grid_for(patches: int, input_shape: InputShape) -> tuple[int, ...] | None:
        size = image_size(input_shape)
        if size is None:
            return square_grid(patches)
        grids = patch_grids(patches, *size)
        return grids[0] if len(grids) == 1 else None


@dataclass(frozen=True)
class RerollLayout(Layout):
    """Hiera's unrolled tokens ``(N, T, C)`` to ``(N, C, h, w)`` by the model's own re-roll.

    Hiera keeps the tokens of every stage but the last in mask-unit order; a row-major reading
    (:class:`TokenLayout`) puts them on the wrong cells. The stage is the one whose grid has
    ``T`` cells; the re-roll is built for the model's image size only.
    """

    reroll: Reroll

    def __call__(self, tensor: Tensor, input_shape: InputShape = None) -> Tensor:
        check_batch(tensor, input_shape)
        size = image_size(input_shape)
        key = self.reroll.key_for(tensor.shape[1]) if tensor.dim() == 3 else None
        grids = ", ".join(f"{h} x {w}" for h, w in dict.fromkeys(s for _, s in self.reroll.sizes))
        if key is None or (size is not None and size != self.reroll.image_size):
            raise ValueError(
                f"the layer tensor {tuple(tensor.shape)} is not a stage of this Hiera "
                f"({self.reroll.source}): its re-roll reads (N, tokens, C) of a "
                f"{self.reroll.image_size[0]} x {self.reroll.image_size[1]} input with stage "
                f"grids {grids}; pick a block's output, its norm or its mlp, at that input size"
            )
        return self.reroll.function(tensor, key).movedim(-1, 1)


@dataclass(frozen=True)
class FunctionLayout(Layout):
    """A user callable ``tensor -> (N, C, *grid)``, such as a pytorch-grad-cam
    ``reshape_transform``; its output is checked to hold the batch and have a grid."""

    function: Callable[[Tensor], Tensor]

    def __call__(self, tensor: Tensor, input_shape: InputShape = None) -> Tensor:
        out = self.function(tensor)
        batch = tensor.shape[0] if input_shape is None else input_shape[0]
        if not isinstance(out, Tensor) or out.dim() < 3 or out.shape[0] != batch:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"the layout callable {getattr(self.function, '__name__', self.function)!r} turned "
                f"a {tuple(tensor.shape)} tensor into {shape}; it must return (N, C, *grid) with "
                f"the batch N = {batch}"
            )
        if not out.is_floating_point() or out.device != tensor.device:
            raise ValueError(
                f"the layout callable {getattr(self.function, '__name__', self.function)!r} turned "
                f"a {tensor.dtype} tensor on {tensor.device} into a {out.dtype} tensor on "
                f"{out.device}; it must return the layer's values, floating point, on "
                f"{tensor.device} (a reshape or permute of its input)"
            )
        return out


@dataclass(frozen=True)
class Reading:
    """One way to read a layer tensor: its layout, in words, and the ``layout=`` selecting it."""

    layout: Layout
    description: str
    selector: str


def shape_readings(
    shape: Sequence[int], input_shape: Sequence[int], facts: ModelFacts = NO_FACTS
) -> list[Reading]:
    """The readings of a layer tensor of ``shape`` for a 4-D image input (the module docstring
    of :mod:`captum_camplus.layouts`), restricted to those ``facts`` allow. [] for another
    dimensionality."""
    return [_reading(candidate, shape) for candidate in candidates(shape, input_shape, facts)]


def _reading(candidate: Candidate, shape: Sequence[int]) -> Reading:
    (height, width), prefix = candidate.grid, candidate.prefix_tokens
    layout: Layout
    if candidate.kind == "channels_first":
        layout = ChannelsFirstLayout()
        description = f"channels first (N, C={shape[1]}, {height} x {width} grid)"
    elif candidate.kind == "channels_last":
        layout = ChannelsLastLayout()
        description = f"channels last (N, {height} x {width} grid, C={shape[3]})"
    else:
        layout = TokenLayout(prefix, candidate.grid)
        description = f"tokens ({prefix} prefix + {height} x {width} grid, D={shape[2]})"
    return Reading(layout, description, selector(layout))


def check_reading(
    layout: Layout, tensor: Tensor, input_shape: InputShape, facts: ModelFacts = NO_FACTS
) -> None:
    """A named ``layout`` fits ``tensor`` for its input: where the shapes admit readings
    (:func:`shape_readings`, restricted by ``facts``) and this layout is not one of them, a
    ``ValueError`` lists the readings that fit. Shapes without any reading (a convolution
    without padding at an odd aspect) leave the choice to the caller."""
    if input_shape is None:
        return
    readings = shape_readings(tensor.shape, input_shape, facts)
    if not readings or any(reading.layout == layout for reading in readings):
        return
    raise ValueError(
        f"the layer tensor {tuple(tensor.shape)} of the {size_text(input_shape)} input does not "
        f"read as {selector(layout)} (its grid does not follow the input) but as "
        f"{listed(readings)}. Pass the layout that is right"
    )


def listed(readings: Sequence[Reading]) -> str:
    return "; ".join(f"{reading.description}: {reading.selector}" for reading in readings)


def selector(layout: Layout) -> str:
    """The ``layout=`` argument that selects ``layout``."""
    if isinstance(layout, TokenLayout):
        return f"layout=TokenLayout(prefix_tokens={layout.prefix_tokens}, grid={layout.grid})"
    if isinstance(layout, ChannelsLastLayout):
        return "layout='channels_last'"
    if isinstance(layout, ChannelsFirstLayout):
        return "layout='channels_first'"
    if isinstance(layout, RerollLayout):
        return "layout='auto'"
    return f"layout={layout!r}"


def _refuse_row_by_row(reading: str, model: Any, facts: ModelFacts) -> None:
    if facts.reroll is not None:
        raise ValueError(
            f"{reading} reads tokens row by row, and {_name(model)} keeps them in mask-unit "
            f"order ({facts.reroll.source}): pass layout='auto', which re-rolls them as the "
            "model does"
        )


def _name(model: Any) -> str:
    return type(model).__name__ if isinstance(model, Module) else getattr(model, "__name__", "it")


__all__ = [
    "ChannelsFirstLayout",
    "ChannelsLastLayout",
    "FunctionLayout",
    "Layout",
    "LayoutSpec",
    "Reading",
    "RerollLayout",
    "TokenLayout",
    "check_reading",
    "listed",
    "selector",
    "shape_readings",
]
