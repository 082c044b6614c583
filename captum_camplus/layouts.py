"""Layer layouts: how a layer's tensor becomes the ``(N, C, *grid)`` tensor the CAM rules read.

A convolution outputs ``(N, C, H, W)``, which the weighting rules take as it is. A vision
transformer's block outputs tokens ``(N, P + H*W, D)``: ``P`` prefix tokens (class,
distillation, register tokens) before the ``H x W`` patch grid; a timm Swin stage outputs
channels-last ``(N, H, W, C)``. A :class:`Layout` turns such a tensor into ``(N, C, H, W)``
(prefix tokens dropped, grid restored), and the same transform is applied to the activations
and to their gradients, so every method weights the patch grid only and returns ``(N, 1, H, W)``
maps. The transforms are views: no copy, no extra pass.

Every CAM class takes ``layout=`` (see :func:`resolve_layout`)::

    LayerGradCamPlusPlus(vit, vit.blocks[-1].norm1, layout="tokens")  # grid from the model
    LayerCams(swin, swin.layers[-1].blocks[-1].norm1, layout="channels_last")
    LayerHiResCam(model, layer, layout=reshape_transform)  # a pytorch-grad-cam callback
    LayerCams(model, layer, layout="auto")  # whatever the model's attributes say (timm models)

Without ``layout=``, a layer is read channels first, and a tensor that the model's attributes
say is tokens or channels last raises an error naming the layout to pass.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Union

from torch import Tensor
from torch.nn import Module

#: What ``layout=`` accepts: ``None`` (the default, channels first), a name from
#: :data:`LAYOUT_NAMES`, a :class:`Layout`, or a callable ``tensor -> (N, C, *grid) tensor``.
LayoutSpec = Union[str, "Layout", Callable[[Tensor], Tensor], None]


class Layout(abc.ABC):
    """Turns a layer tensor into ``(N, C, *grid)``; applied alike to activations and gradients."""

    @abc.abstractmethod
    def __call__(self, tensor: Tensor) -> Tensor:
        """The ``(N, C, *grid)`` view of ``tensor``, or a ``ValueError`` naming the mismatch."""


@dataclass(frozen=True)
class ChannelsFirstLayout(Layout):
    """``(N, C, *grid)`` taken as it is: convolutional layers."""

    def __call__(self, tensor: Tensor) -> Tensor:
        return tensor


@dataclass(frozen=True)
class ChannelsLastLayout(Layout):
    """``(N, *grid, C)`` to ``(N, C, *grid)``, at least two grid dims: timm Swin stages."""

    def __call__(self, tensor: Tensor) -> Tensor:
        if tensor.dim() < 4:
            raise ValueError(
                f"layout 'channels_last' expects a (N, H, W, C) tensor, got shape "
                f"{tuple(tensor.shape)}; for transformer tokens (N, tokens, D) use layout='tokens'"
            )
        return tensor.movedim(-1, 1)


@dataclass(frozen=True)
class TokenLayout(Layout):
    """Tokens ``(N, P + prod(grid), D)`` to ``(N, D, *grid)``: ViT, DeiT, BEiT, EVA.

    The ``P`` prefix tokens (class, distillation, registers) come first, as in timm, and are
    dropped; the patch tokens follow in row-major grid order.

    Args:
        prefix_tokens: ``P``, the number of tokens before the patch grid.
        grid: The patch grid, e.g. ``(14, 14)``; ``None`` takes the square grid that the token
            count gives (for models whose grid follows the input size).
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
        """The layout of a timm-style vision transformer's token layers.

        Reads ``num_prefix_tokens`` and ``patch_embed.grid_size`` (duck-typed, no timm import)
        from ``model`` or, for a wrapper such as ``nn.Sequential(normalize, vit)``, from the
        submodule that holds ``layer``. A model built with ``dynamic_img_size=True`` gets
        ``grid=None`` (square grid from the token count).
        """
        found = _token_model(model, layer)
        if found is None:
            raise ValueError(
                f"layout='tokens' reads num_prefix_tokens and patch_embed.grid_size from the "
                f"model, and {type(model).__name__} has no such (sub)module"
                + ("" if layer is None else " around the layer")
                + ": pass TokenLayout(prefix_tokens=1, grid=(14, 14)) with your model's numbers"
            )
        return _token_layout_of(found)

    def __call__(self, tensor: Tensor) -> Tensor:
        if tensor.dim() != 3:
            raise ValueError(
                f"{self} expects tokens (N, tokens, D), got shape {tuple(tensor.shape)}"
                + ("; for (N, H, W, C) use layout='channels_last'" if tensor.dim() == 4 else "")
            )
        patches = tensor.shape[1] - self.prefix_tokens
        grid = self.grid if self.grid is not None else _square(patches)
        if grid is None or patches != math.prod(grid):
            expected = "a square number of" if grid is None else f"{math.prod(grid)} (grid {grid})"
            raise ValueError(
                f"{self} expects {self.prefix_tokens} prefix tokens + {expected} patch tokens, "
                f"got shape {tuple(tensor.shape)} ({tensor.shape[1]} tokens): the layer's tokens "
                "do not form the grid; pass TokenLayout(prefix_tokens=..., grid=...) that fit"
            )
        n, _, channels = tensor.shape
        return tensor[:, self.prefix_tokens :].reshape(n, *grid, channels).movedim(-1, 1)


@dataclass(frozen=True)
class FunctionLayout(Layout):
    """A user callable ``tensor -> (N, C, *grid)``, such as a pytorch-grad-cam
    ``reshape_transform``; its output is checked to keep the batch and have a grid."""

    function: Callable[[Tensor], Tensor]

    def __call__(self, tensor: Tensor) -> Tensor:
        out = self.function(tensor)
        if not isinstance(out, Tensor) or out.dim() < 3 or out.shape[0] != tensor.shape[0]:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"the layout callable {getattr(self.function, '__name__', self.function)!r} turned "
                f"a {tuple(tensor.shape)} tensor into {shape}; it must return (N, C, *grid) with "
                f"the same N = {tensor.shape[0]}"
            )
        if not out.is_floating_point() or out.device != tensor.device:
            raise ValueError(
                f"the layout callable {getattr(self.function, '__name__', self.function)!r} turned "
                f"a {tensor.dtype} tensor on {tensor.device} into a {out.dtype} tensor on "
                f"{out.device}; it must return the layer's values, floating point, on "
                f"{tensor.device} (a reshape or permute of its input)"
            )
        return out


class AutoLayout(Layout):
    """The layout that the model's own attributes give, chosen per tensor (``layout="auto"``).

    * a 3-D tensor in a model with ``num_prefix_tokens`` and ``patch_embed.grid_size`` (timm ViT,
      DeiT, BEiT, EVA): :meth:`TokenLayout.from_model`;
    * in a model whose ``output_fmt`` is ``"NHWC"`` (timm Swin): a 4-D tensor is channels last,
      a 3-D one tokens without prefix on a square grid (``TokenLayout(0)``, Swin's MLP branch);
    * anything else: channels first, as it is.

    The model is inspected once (duck-typed, no timm import): the innermost module holding the
    layer that has the attribute decides.
    """

    def __init__(self, forward_func: Any = None, layer: Module | None = None) -> None:
        self._source = (forward_func, layer)
        self._formats: tuple[TokenLayout | None, bool] | None = None  # (tokens, channels last)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __call__(self, tensor: Tensor) -> Tensor:
        chosen = self.choose(tensor)
        return tensor if chosen is None else chosen(tensor)

    def choose(self, tensor: Tensor) -> Layout | None:
        """The layout for ``tensor``, or ``None`` for channels first."""
        if tensor.dim() not in (3, 4):
            return None
        if self._formats is None:
            forward_func, layer = self._source
            module = _as_module(forward_func)
            chain = [] if module is None or layer is None else _holders(module, layer)[::-1]
            token_model = _find_token_model(chain)
            formats = [vars(m)["output_fmt"] for m in chain if "output_fmt" in vars(m)]
            self._formats = (
                None if token_model is None else _token_layout_of(token_model),
                bool(formats) and formats[0] == "NHWC",
            )
        tokens, channels_last = self._formats
        if tensor.dim() == 3:
            return tokens if tokens is not None else TokenLayout(0) if channels_last else None
        return ChannelsLastLayout() if channels_last else None


class DefaultLayout(AutoLayout):
    """Channels first, refusing a tensor that :class:`AutoLayout` would read otherwise.

    Built by :func:`resolve_layout` when no layout is named: a ViT's tokens or a Swin stage's
    channels-last tensor would be read along the wrong axes, so they raise an error that names
    the layout to pass.
    """

    def __call__(self, tensor: Tensor) -> Tensor:
        chosen = self.choose(tensor)
        if chosen is not None:
            if isinstance(chosen, ChannelsLastLayout):
                what, name = (
                    "channels last (N, H, W, C), as the model's output_fmt says",
                    "'channels_last'",
                )
            else:
                what, name = "transformer tokens (N, tokens, D)", "'tokens' (or 'auto')"
            raise ValueError(
                f"the layer tensor {tuple(tensor.shape)} looks like {what}: pass layout={name}, "
                "or layout='channels_first' if it really is (N, C, *spatial)"
            )
        return tensor


#: The layouts that ``layout=`` accepts by name.
LAYOUT_NAMES = ("channels_first", "channels_last", "tokens", "auto")


def resolve_layout(
    layout: LayoutSpec, forward_func: Any = None, layer: Module | None = None
) -> Layout:
    """The :class:`Layout` for a ``layout=`` argument.

    Args:
        layout: ``None`` (channels first, with the checks of :class:`DefaultLayout`),
            ``"channels_first"``, ``"channels_last"``, ``"tokens"`` (:meth:`TokenLayout.from_model`
            of ``forward_func``), ``"auto"`` (:class:`AutoLayout`), a :class:`Layout`, or a
            callable (:class:`FunctionLayout`).
        forward_func, layer: The attribution's model and layer, read by ``"tokens"``, ``"auto"``
            and ``None``.
    """
    if isinstance(layout, Layout):
        return layout
    if isinstance(layout, str):
        if layout == "channels_first":
            return ChannelsFirstLayout()
        if layout == "channels_last":
            return ChannelsLastLayout()
        if layout == "tokens":
            return TokenLayout.from_model(forward_func, layer)
        if layout == "auto":
            return AutoLayout(forward_func, layer)
        raise ValueError(f"unknown layout {layout!r}; choose from {LAYOUT_NAMES}")
    if layout is None:
        return DefaultLayout(forward_func, layer)
    if callable(layout):
        return FunctionLayout(layout)
    raise TypeError(
        f"layout must be None, a name from {LAYOUT_NAMES}, a Layout or a callable, "
        f"got {type(layout).__name__}"
    )


def _as_module(forward_func: Any) -> Module | None:
    """The module behind ``forward_func`` (itself, or the owner of a bound ``forward``)."""
    if isinstance(forward_func, Module):
        return forward_func
    owner = getattr(forward_func, "__self__", None)
    return owner if isinstance(owner, Module) else None


def _holders(module: Module, layer: Module) -> list[Module]:
    """``module`` and its submodules that hold ``layer``, outermost first ([] if none does)."""
    if module is layer:
        return [module]
    for child in module._modules.values():  # a plain walk: named_modules() builds every name
        chain = [] if child is None else _holders(child, layer)
        if chain:
            return [module, *chain]
    return []


def _token_model(forward_func: Any, layer: Module | None) -> Module | None:
    """The innermost (sub)module with ``num_prefix_tokens`` and ``patch_embed.grid_size`` that
    holds ``layer`` (the first in module order, without a layer)."""
    module = _as_module(forward_func)
    if module is None:
        return None
    return _find_token_model(
        module.modules() if layer is None else reversed(_holders(module, layer))
    )


def _token_layout_of(model: Module) -> TokenLayout:
    grid = None if getattr(model, "dynamic_img_size", False) else model.patch_embed.grid_size
    return TokenLayout(int(model.num_prefix_tokens), None if grid is None else tuple(grid))


def _find_token_model(candidates: Iterable[Module]) -> Module | None:
    for candidate in candidates:
        # instance attributes read from __dict__: Module.__getattr__ raises for missing names
        if isinstance(vars(candidate).get("num_prefix_tokens"), int) and hasattr(
            getattr(candidate, "patch_embed", None), "grid_size"
        ):
            return candidate
    return None


def _square(count: int) -> tuple[int, int] | None:
    side = math.isqrt(max(count, 0))
    return (side, side) if count > 0 and side * side == count else None


__all__ = [
    "LAYOUT_NAMES",
    "AutoLayout",
    "ChannelsFirstLayout",
    "ChannelsLastLayout",
    "DefaultLayout",
    "FunctionLayout",
    "Layout",
    "LayoutSpec",
    "TokenLayout",
    "resolve_layout",
]
