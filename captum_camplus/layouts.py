"""Layer layouts: how a layer's tensor becomes the ``(N, C, *grid)`` tensor the CAM rules read.

A convolution outputs ``(N, C, H, W)``, which the weighting rules take as it is. A vision
transformer's block outputs tokens ``(N, P + H*W, D)``: ``P`` prefix tokens (class,
distillation, register tokens) before the ``H x W`` patch grid; a Swin stage or a ConvNeXt block
in torchvision and timm outputs channels-last ``(N, H, W, C)``. A :class:`Layout` turns such a
tensor into ``(N, C, H, W)`` (prefix tokens dropped, grid restored), and the same transform is
applied to the activations and to their gradients, so every method weights the patch grid only
and returns ``(N, 1, H, W)`` maps. The transforms are views: no copy, no extra pass.

Every CAM class takes ``layout=`` (see :func:`resolve_layout`)::

    LayerGradCamPlusPlus(vit, vit.blocks[-1].norm1, layout="tokens")  # counts from the model
    LayerCams(swin, swin.layers[-1].blocks[-1].norm1, layout="channels_last")
    LayerHiResCam(model, layer, layout=reshape_transform)  # a pytorch-grad-cam callback
    LayerCams(model, layer, layout="auto")  # the one reading of the shapes, model-confirmed

**Readings.** For a layer tensor and the 4-D image input ``(N, C_in, H, W)`` it came from, the
shapes admit these readings (:func:`shape_readings`):

* channels first ``(N, C, h, w)`` and channels last ``(N, h, w, C)``, where ``(h, w)`` follows
  the image: ``h <= H``, ``w <= W`` and the aspect of the image within one grid cell
  (``|w - W h / H| <= 1`` and ``|h - H w / W| <= 1``), so a grid on a 256 x 64 image is not
  square;
* tokens ``(N, P + gh * gw, D)``, ``0 <= P <= 8`` prefix tokens (the model's count where it has
  one) and ``(gh, gw) = (H / p, W / p)`` for a patch size ``p`` that divides both sides; only if
  no such reading exists and the model states ``P``, ``p`` that leaves a remainder (input
  padded or cropped: ``gh, gw`` both rounded up or both down).

The model's attributes, where present, confirm them (:class:`ModelFacts`); a 4-D tensor whose
order the modules state (a convolution, normalisation or pooling over ``(N, C, H, W)`` that
outputs it, directly or before element-wise modules of an ``nn.Sequential``; torchvision's
``Permute`` modules; timm's ``output_fmt``) is read as they say. The attributes: timm
(``num_prefix_tokens``, ``patch_embed.patch_size``, ``output_fmt``), torchvision
(``VisionTransformer.class_token`` / ``patch_size``, the ``Permute`` modules of Swin and
ConvNeXt), Hugging Face (``config.patch_size``; the class, distillation and register tokens of
``embeddings``), open_clip (``class_embedding``, ``patch_size``). They are found on the module
that holds the layer, also behind a wrapper (``nn.Sequential``, ``DataParallel``, a lambda or
``functools.partial`` that calls the model).

``"auto"`` uses the one reading left; several or none raise an error that lists the readings
and the ``layout=`` that selects each. Without ``layout=`` (Captum's channels-first reading), a
tensor that contradicts it for its input (3-D tokens of a 4-D image, ``(N, h, w, C)``) raises an
error naming the layout to pass; 1-D models (``(N, C, L)`` inputs) are read as before. A named
``"channels_last"`` or ``TokenLayout`` with a grid that the shapes contradict (other readings
fit the input, its own does not: ``"channels_last"`` on a conv's ``(N, C, h, w)``) raises an
error that lists the readings that fit (:func:`check_reading`). Under any layout, a tensor
whose first dimension is not the batch (windowed attention, a sequence-first ``(T, N, D)``
tensor) is refused with the reason.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Union

from torch import Tensor, nn
from torch.nn import Module, Sequential

#: What ``layout=`` accepts: ``None`` (the default, channels first), a name from
#: :data:`LAYOUT_NAMES`, a :class:`Layout`, or a callable ``tensor -> (N, C, *grid) tensor``.
LayoutSpec = Union[str, "Layout", Callable[[Tensor], Tensor], None]

#: The shape of the (first) input a layer tensor came from, or None where it is not known.
InputShape = Sequence[int] | None

#: The most prefix tokens a token reading assumes without a model that states its count.
MAX_PREFIX_TOKENS = 8


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
        if facts.prefix_tokens is None:
            raise ValueError(
                f"layout='tokens' reads the prefix token count from the model, and "
                f"{_name(model)} has no vision transformer (timm, torchvision, Hugging Face, "
                "open_clip) that states it"
                + ("" if layer is None else " around the layer")
                + ": pass TokenLayout(prefix_tokens=1, grid=(14, 14)) with your model's numbers"
            )
        return cls(facts.prefix_tokens, facts.grid)

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
                if _image_size(input_shape) is None
                else f"patch tokens on a grid of the {_size_text(input_shape)} input"
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
        size = _image_size(input_shape)
        if size is None:
            return _square(patches)
        grids = patch_grids(patches, *size)
        return grids[0] if len(grids) == 1 else None


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


# ------------------------------------------------------------------ what the model's attributes say


@dataclass(frozen=True)
class ModelFacts:
    """What a model's attributes say about a layer's layout (``None``: nothing).

    Attributes:
        prefix_tokens: Tokens before the patch grid (``P``).
        patch_size: ``(ph, pw)`` of the patch embedding, for the layers on its grid.
        grid: A grid the model fixes (timm without ``dynamic_img_size``).
        channels_last: Whether a 4-D tensor at the layer is ``(N, H, W, C)``.
        source: The attributes read, for messages.
    """

    prefix_tokens: int | None = None
    patch_size: tuple[int, int] | None = None
    grid: tuple[int, ...] | None = None
    channels_last: bool | None = None
    source: str = ""


def model_facts(forward_func: Any, layer: Module | None = None) -> ModelFacts:
    """The :class:`ModelFacts` of the innermost module around ``layer`` that states any.

    ``forward_func`` is the model, a bound method of it, or a function that calls it (its
    closure, globals it names and ``functools.partial`` arguments are searched for the module
    that holds ``layer``). Duck-typed: no timm, torchvision, transformers or open_clip import.
    """
    chain = _chain(forward_func, layer)
    order, order_source = _layer_order(chain)
    for module in reversed(chain):
        facts = _facts_of(module)
        if facts is not None:
            if order is None:
                return facts
            source = f"{facts.source}; {order_source}"
            return ModelFacts(facts.prefix_tokens, facts.patch_size, facts.grid, order, source)
    return ModelFacts(channels_last=order, source=order_source)


def _layer_order(chain: list[Module]) -> tuple[bool | None, str]:
    """Channels last (True) or first (False) at the layer that ``chain`` ends in, as its modules
    say: a convolution, normalisation or pooling over ``(N, C, H, W)`` (the layer, or what it
    follows in an ``nn.Sequential``) outputs channels first; otherwise torchvision's ``Permute``
    modules decide. (None, "") where neither says."""
    if len(chain) < 2:
        return None, ""
    layer, parent = chain[-1], chain[-2]
    run = list(parent)[: list(parent).index(layer) + 1] if isinstance(parent, Sequential) else []
    decided = _channels_first_source(run or [layer])
    if decided is not None:
        return False, f"the layer's output comes from {decided} (channels first)"
    permuted = _permute_format(chain[0], layer)
    if permuted is None:
        return None, ""
    return permuted, f"torchvision Permute modules: channels {'last' if permuted else 'first'}"


#: Modules whose output is channels first ``(N, C, H, W)``, and modules that keep the layout.
_CHANNELS_FIRST = (
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.BatchNorm2d,
    nn.InstanceNorm2d,
    nn.GroupNorm,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
_ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Sigmoid,
    nn.Tanh,
    nn.ELU,
    nn.Dropout,
    nn.Identity,
)


def _channels_first_source(run: list[Module]) -> str | None:
    """The module that makes the output of ``run`` (modules called in order) channels first, or
    None: walked back over element-wise modules, into nested ``nn.Sequential``."""
    for module in reversed(run):
        if isinstance(module, _CHANNELS_FIRST):
            return type(module).__name__
        if isinstance(module, Sequential):
            return _channels_first_source(list(module))
        if not isinstance(module, _ELEMENTWISE):
            return None
    return None


def _facts_of(module: Module) -> ModelFacts | None:
    own = vars(module)  # instance attributes: Module.__getattr__ raises for missing names
    patch_embed = own["_modules"].get("patch_embed")
    if isinstance(own.get("num_prefix_tokens"), int) and hasattr(patch_embed, "patch_size"):
        patch = _pair(patch_embed.patch_size)
        dynamic = bool(getattr(module, "dynamic_img_size", False))
        grid = getattr(patch_embed, "grid_size", None)
        prefix = own["num_prefix_tokens"]
        return ModelFacts(
            prefix,
            patch,
            None if dynamic or grid is None else tuple(int(g) for g in grid),
            None,
            f"timm num_prefix_tokens={prefix}, patch_embed.patch_size={patch}",
        )
    if own.get("output_fmt") == "NHWC":  # timm Swin: stages (N, H, W, C), MLP tokens (N, HW, C)
        return ModelFacts(0, None, None, True, "timm output_fmt='NHWC'")
    params = own["_parameters"]
    if isinstance(params.get("class_token"), Tensor) and isinstance(own.get("patch_size"), int):
        patch = _pair(own["patch_size"])
        return ModelFacts(1, patch, None, None, f"torchvision class_token, patch_size={patch}")
    if isinstance(params.get("class_embedding"), Tensor) and "patch_size" in own:
        patch = _pair(own["patch_size"])
        return ModelFacts(1, patch, None, None, f"open_clip class_embedding, patch_size={patch}")
    config, embeddings = own.get("config"), own["_modules"].get("embeddings")
    if embeddings is not None and hasattr(config, "patch_size"):
        return _hugging_face_facts(config, embeddings)
    return None


def _hugging_face_facts(config: Any, embeddings: Module) -> ModelFacts:
    tokens = vars(embeddings)["_parameters"]
    counts = {
        "cls_token": 1 if "cls_token" in tokens else 0,
        "distillation_token": 1 if "distillation_token" in tokens else 0,
        "register_tokens": int(tokens["register_tokens"].shape[1])
        if isinstance(tokens.get("register_tokens"), Tensor)
        else 0,
    }
    prefix = sum(counts.values())
    kind = getattr(config, "model_type", type(config).__name__)
    named = ", ".join(f"{name}" for name, count in counts.items() if count) or "no class token"
    if prefix == 0:  # Swin-like: stages merge patches, the grid does not follow patch_size
        return ModelFacts(0, None, None, None, f"Hugging Face {kind}: embeddings with {named}")
    patch = _pair(config.patch_size)
    return ModelFacts(
        prefix, patch, None, None, f"Hugging Face {kind}: embeddings.{named}, patch_size={patch}"
    )


def _permute_format(root: Module, layer: Module) -> bool | None:
    """Channels last (True) or first (False) at ``layer``'s output as the last torchvision
    ``Permute`` module run before it says (modules in registration order: Swin, ConvNeXt);
    None for a model without them."""
    modules = list(root.modules())
    permutes = [
        i
        for i, m in enumerate(modules)
        if type(m).__name__ == "Permute" and list(getattr(m, "dims", ())) in _PERMUTES
    ]
    if not permutes:
        return None
    end = modules.index(layer) + len(list(layer.modules()))  # the layer's subtree, pre-order
    before = [i for i in permutes if i < end]
    return bool(before) and list(modules[before[-1]].dims) == [0, 2, 3, 1]


_PERMUTES = ([0, 2, 3, 1], [0, 3, 1, 2])


# ---------------------------------------------------------------- what the shapes say


@dataclass(frozen=True)
class Reading:
    """One way to read a layer tensor: its layout, in words, and the ``layout=`` selecting it."""

    layout: Layout
    description: str
    selector: str


def shape_readings(
    shape: Sequence[int], input_shape: Sequence[int], facts: ModelFacts = ModelFacts()
) -> list[Reading]:
    """The readings of a layer tensor of ``shape`` for a 4-D image input (module docstring),
    restricted to those ``facts`` allow. [] for another dimensionality."""
    size = _image_size(input_shape)
    if size is None or len(shape) not in (3, 4) or shape[0] != input_shape[0]:
        return []
    height, width = size
    if len(shape) == 4:
        readings = []
        if facts.channels_last is not True and _follows(shape[2], shape[3], height, width):
            readings.append(
                Reading(
                    ChannelsFirstLayout(),
                    f"channels first (N, C={shape[1]}, {shape[2]} x {shape[3]} grid)",
                    _selector(ChannelsFirstLayout()),
                )
            )
        if facts.channels_last is not False and _follows(shape[1], shape[2], height, width):
            readings.append(
                Reading(
                    ChannelsLastLayout(),
                    f"channels last (N, {shape[1]} x {shape[2]} grid, C={shape[3]})",
                    _selector(ChannelsLastLayout()),
                )
            )
        return readings
    prefixes = (
        range(MAX_PREFIX_TOKENS + 1) if facts.prefix_tokens is None else [facts.prefix_tokens]
    )
    found: dict[tuple[int, tuple[int, int]], bool] = {}
    for prefix in prefixes:
        if shape[1] - prefix > 0:
            for grid, exact in _token_grids(shape[1] - prefix, height, width, facts.patch_size):
                found[prefix, grid] = found.get((prefix, grid), False) or exact
    if any(found.values()) or facts.prefix_tokens is None:  # rounded grids need the model's P
        found = {key: exact for key, exact in found.items() if exact}
    return [
        Reading(
            TokenLayout(prefix, grid),
            f"tokens ({prefix} prefix + {grid[0]} x {grid[1]} grid, D={shape[2]})",
            _selector(TokenLayout(prefix, grid)),
        )
        for prefix, grid in sorted(found)
    ]


def patch_grids(count: int, height: int, width: int) -> list[tuple[int, int]]:
    """The grids ``(gh, gw)`` of ``count`` patches that an image of ``height x width`` gives
    (exact patch sizes first, see :func:`shape_readings`)."""
    found: dict[tuple[int, int], bool] = {}
    for grid, exact in _token_grids(count, height, width, None):
        found[grid] = found.get(grid, False) or exact
    exact = [grid for grid, is_exact in found.items() if is_exact]
    return sorted(exact or found)


def _token_grids(
    count: int, height: int, width: int, patch: tuple[int, int] | None
) -> Iterable[tuple[tuple[int, int], bool]]:
    sizes = [patch] if patch is not None else [(p, p) for p in range(1, max(height, width) + 1)]
    for ph, pw in sizes:
        if height % ph == 0 and width % pw == 0:
            grid = (height // ph, width // pw)
            if grid[0] * grid[1] == count:
                yield grid, True
            continue
        for grid in ((height // ph, width // pw), (-(-height // ph), -(-width // pw))):
            if min(grid) >= 1 and grid[0] * grid[1] == count:
                yield grid, False


def _follows(h: int, w: int, height: int, width: int) -> bool:
    """A ``h x w`` grid follows a ``height x width`` image: no larger, same aspect within one
    cell."""
    return (
        1 <= h <= height
        and 1 <= w <= width
        and abs(w - width * h / height) <= 1
        and abs(h - height * w / width) <= 1
    )


def check_reading(
    layout: Layout, tensor: Tensor, input_shape: InputShape, facts: ModelFacts = ModelFacts()
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
        f"the layer tensor {tuple(tensor.shape)} of the {_size_text(input_shape)} input does not "
        f"read as {_selector(layout)} (its grid does not follow the input) but as "
        f"{_listed(readings)}. Pass the layout that is right"
    )


def _listed(readings: Sequence[Reading]) -> str:
    return "; ".join(f"{reading.description}: {reading.selector}" for reading in readings)


def check_batch(tensor: Tensor, input_shape: InputShape) -> None:
    """The layer tensor's first dimension is the batch of the input it came from."""
    if input_shape is None or len(input_shape) == 0 or tensor.dim() == 0:
        return
    batch = int(input_shape[0])
    first = int(tensor.shape[0])
    if first == batch:
        return
    shape = tuple(tensor.shape)
    if tensor.dim() == 3 and tensor.shape[1] == batch:
        why = (
            "it is sequence-first (T, N, D), as nn.MultiheadAttention without batch_first and "
            "older open_clip towers give it; pick a layer with batch-first output, or pass a "
            "callable layout that moves the batch first and restores the grid"
        )
    elif first % batch == 0:
        why = (
            f"it holds {first // batch} rows per image, as windowed attention (Swin's "
            "attn.qkv, attn) splits each image into windows, so one map per image does not "
            "exist there; pick the block's norm1 (before the window partition)"
        )
    else:
        why = "no map per image can be made from it; pick a layer with one row per image"
    raise ValueError(
        f"the layer tensor {shape} does not have the batch ({batch} images of the input "
        f"{tuple(input_shape)}) as its first dimension: {why}"
    )


# ------------------------------------------------------------------ "auto" and the default


class AutoLayout(Layout):
    """The one reading of the tensor for its input, confirmed by the model (``layout="auto"``).

    See the module docstring. Tensors of 1-D models, ``(N, C)`` tensors and inputs that are not
    images are taken as they are. Called without the input (``map_from_layer``), the model's
    attributes alone decide: tokens with their prefix count and fixed grid, channels last where
    the model says so, channels first otherwise.
    """

    def __init__(self, forward_func: Any = None, layer: Module | None = None) -> None:
        self._source = (forward_func, layer)
        self._facts: ModelFacts | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @property
    def facts(self) -> ModelFacts:
        """The model's :class:`ModelFacts` at the layer (read once)."""
        if self._facts is None:
            self._facts = model_facts(*self._source)
        return self._facts

    def __call__(self, tensor: Tensor, input_shape: InputShape = None) -> Tensor:
        if input_shape is None:
            chosen = self._from_facts(tensor)
            return tensor if chosen is None else chosen(tensor)
        check_batch(tensor, input_shape)
        if _image_size(input_shape) is None or tensor.dim() not in (3, 4):
            return tensor
        if tensor.dim() == 4 and self.facts.channels_last is not None:  # the modules say it
            chosen = ChannelsLastLayout() if self.facts.channels_last else ChannelsFirstLayout()
            return chosen(tensor, input_shape)
        readings = shape_readings(tensor.shape, input_shape, self.facts)
        if len(readings) == 1:
            return readings[0].layout(tensor, input_shape)
        raise ValueError(self._listing(tensor, input_shape, readings))

    def _from_facts(self, tensor: Tensor) -> Layout | None:
        facts = self.facts
        if tensor.dim() == 3 and facts.prefix_tokens is not None:
            return TokenLayout(facts.prefix_tokens, facts.grid)
        if tensor.dim() == 4 and facts.channels_last:
            return ChannelsLastLayout()
        return None

    def _listing(self, tensor: Tensor, input_shape: Sequence[int], readings: list[Reading]) -> str:
        """The error text for several readings or none."""
        head = f"the layer tensor {tuple(tensor.shape)} of the {_size_text(input_shape)} input"
        if readings:
            return (
                f"{head} can be read {len(readings)} ways: {_listed(readings)}. Pass the one "
                "that is right"
            )
        unconfirmed = shape_readings(tensor.shape, input_shape)
        if unconfirmed:
            return (
                f"{head} can be read as "
                + "; ".join(f"{r.description} ({r.selector})" for r in unconfirmed)
                + f", which the model's attributes ({self.facts.source}) contradict. Pass the "
                "layout that is right"
            )
        return (
            f"{head} has no reading: not (N, C, h, w) nor (N, h, w, C) with an h x w grid of the "
            f"input's aspect, nor tokens (N, P + gh * gw, D) with 0 <= P <= {MAX_PREFIX_TOKENS} "
            "and gh x gw the input divided by a patch size. Pass layout='channels_first', "
            "'channels_last', TokenLayout(prefix_tokens, grid) or a callable that returns "
            "(N, C, *grid)"
        )


class DefaultLayout(AutoLayout):
    """Channels first (Captum's reading), refusing a tensor that contradicts it.

    Built by :func:`resolve_layout` when no layout is named. For a 4-D image input, a 3-D layer
    tensor (transformer tokens) and a 4-D one that only reads as channels last, or that the
    model's attributes say is channels last, raise an error naming the layout to pass. A 4-D
    tensor with no reading at all (a convolution without padding at an odd aspect) is taken as
    it is, as Captum does; so are other inputs (1-D models).
    """

    def __call__(self, tensor: Tensor, input_shape: InputShape = None) -> Tensor:
        if input_shape is None:
            chosen = self._from_facts(tensor)
            if chosen is not None:
                raise ValueError(self._refusal(tensor, chosen))
            return tensor
        check_batch(tensor, input_shape)
        if _image_size(input_shape) is None or tensor.dim() not in (3, 4):
            return tensor
        readings = shape_readings(tensor.shape, input_shape, self.facts)
        if tensor.dim() == 4:
            if self.facts.channels_last is False or any(
                isinstance(r.layout, ChannelsFirstLayout) for r in readings
            ):
                return tensor
            if not readings and self.facts.channels_last is None:
                return tensor
            return_to = readings[0].layout if readings else ChannelsLastLayout()
            raise ValueError(self._refusal(tensor, return_to, input_shape))
        chosen = readings[0].layout if len(readings) == 1 else None
        raise ValueError(self._refusal(tensor, chosen, input_shape, readings))

    def _refusal(
        self,
        tensor: Tensor,
        chosen: Layout | None,
        input_shape: InputShape = None,
        readings: Sequence[Reading] = (),
    ) -> str:
        shape = tuple(tensor.shape)
        of = "" if input_shape is None else f" of the {_size_text(input_shape)} input"
        tail = ", or layout='channels_first' if it really is (N, C, *spatial)"
        if isinstance(chosen, ChannelsLastLayout):
            because = f" (the model's {self.facts.source})" if self.facts.source else ""
            return (
                f"the layer tensor {shape}{of} looks like channels last (N, H, W, C){because}: "
                f"pass layout='channels_last' (or 'auto'){tail}"
            )
        if isinstance(chosen, TokenLayout):
            return (
                f"the layer tensor {shape}{of} looks like transformer tokens (N, tokens, D), "
                f"{chosen.prefix_tokens} prefix + grid {chosen.grid or 'from the input'}: pass "
                f"layout='auto' (or {_selector(chosen)}){tail}"
            )
        listed = _listed(readings)
        return (
            f"the layer tensor {shape}{of} is 3-D, not (N, C, H, W): "
            + (f"it reads as {listed}" if listed else "no token grid fits it either")
            + f"; pass the layout that is right{tail}"
        )


def _selector(layout: Layout) -> str:
    """The ``layout=`` argument that selects ``layout``."""
    if isinstance(layout, TokenLayout):
        return f"layout=TokenLayout(prefix_tokens={layout.prefix_tokens}, grid={layout.grid})"
    if isinstance(layout, ChannelsLastLayout):
        return "layout='channels_last'"
    if isinstance(layout, ChannelsFirstLayout):
        return "layout='channels_first'"
    return f"layout={layout!r}"


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


# ------------------------------------------------------------------ finding the model


def _chain(forward_func: Any, layer: Module | None) -> list[Module]:
    """The modules from a model behind ``forward_func`` down to ``layer``, outermost first
    (without a layer: the first model found alone); [] if none holds it."""
    for module in _reachable_modules(forward_func):
        if layer is None:
            return [module]
        chain = _holders(module, layer)
        if chain:
            return chain
    return []


def _reachable_modules(forward_func: Any, depth: int = 0) -> Iterable[Module]:
    """Modules that ``forward_func`` is or calls: itself, a bound method's owner, a partial's
    function and arguments, a function's closure and the globals its code names."""
    if isinstance(forward_func, Module):
        yield forward_func
        return
    if depth > 3:
        return
    owner = getattr(forward_func, "__self__", None)
    if isinstance(owner, Module):
        yield owner
    for inner in (getattr(forward_func, "func", None), *getattr(forward_func, "args", ())):
        if inner is not None and inner is not forward_func:
            yield from _reachable_modules(inner, depth + 1)
    code = getattr(forward_func, "__code__", None)
    cells = getattr(forward_func, "__closure__", None) or ()
    values = [cell.cell_contents for cell in cells if _filled(cell)]
    if code is not None:
        names = getattr(forward_func, "__globals__", {})
        values += [names[name] for name in code.co_names if name in names]
    for value in values:
        if isinstance(value, Module) or callable(value):
            yield from _reachable_modules(value, depth + 1)


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 -- an empty cell raises
    except ValueError:
        return False
    return True


def _holders(module: Module, layer: Module) -> list[Module]:
    """``module`` and its submodules that hold ``layer``, outermost first ([] if none does)."""
    if module is layer:
        return [module]
    for child in module._modules.values():  # a plain walk: named_modules() builds every name
        chain = [] if child is None else _holders(child, layer)
        if chain:
            return [module, *chain]
    return []


def _image_size(input_shape: InputShape) -> tuple[int, int] | None:
    """``(H, W)`` of a 4-D image input; None for another input or none."""
    if input_shape is None or len(input_shape) != 4:
        return None
    return int(input_shape[2]), int(input_shape[3])


def _size_text(input_shape: Sequence[int]) -> str:
    size = _image_size(input_shape)
    return " x ".join(map(str, size)) if size else str(tuple(input_shape))


def _pair(size: Any) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    first, second = tuple(size)
    return (int(first), int(second))


def _name(model: Any) -> str:
    return type(model).__name__ if isinstance(model, Module) else getattr(model, "__name__", "it")


def _square(count: int) -> tuple[int, int] | None:
    side = math.isqrt(max(count, 0))
    return (side, side) if count > 0 and side * side == count else None


__all__ = [
    "LAYOUT_NAMES",
    "MAX_PREFIX_TOKENS",
    "AutoLayout",
    "ChannelsFirstLayout",
    "ChannelsLastLayout",
    "DefaultLayout",
    "FunctionLayout",
    "InputShape",
    "Layout",
    "LayoutSpec",
    "ModelFacts",
    "Reading",
    "TokenLayout",
    "check_batch",
    "check_reading",
    "model_facts",
    "patch_grids",
    "resolve_layout",
    "shape_readings",
]
