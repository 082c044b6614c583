"""What a model's attributes say about a layer's layout: duck-typed readers of timm,
torchvision, Hugging Face and open_clip internals.

The one part of :mod:`captum_camplus.layouts` that follows other libraries' releases: it reads
their attributes by name (no timm, torchvision, transformers or open_clip import) and finds the
module that holds a layer behind a wrapper, a bound method, a lambda or a ``functools.partial``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor, nn
from torch.nn import Module, Sequential

#: How many wrappers deep (partials, closures, globals a function names) the search for the
#: model behind a forward function goes: a lambda calling a method of a wrapper is three.
MAX_WRAPPER_DEPTH = 3


@dataclass(frozen=True)
class Reroll:
    """A Hiera model's own re-roll of its "unrolled" tokens back to a row-major grid.

    Hiera (timm ``Hiera.reroll``, Hugging Face ``HieraEncoder.reroll``) keeps the tokens of every
    stage but the last in mask-unit order, not row by row; only its re-roll restores the grid.

    Attributes:
        function: ``(tokens (N, T, C), key) -> (N, h, w, C)``, the model's re-roll.
        sizes: ``(key, (h, w))`` per block or stage: the grid of the tokens there.
        image_size: The input ``(H, W)`` the re-roll is built for.
        source: The attributes read, for messages.
    """

    function: Callable[[Tensor, int], Tensor]
    sizes: tuple[tuple[int, tuple[int, int]], ...]
    image_size: tuple[int, int]
    source: str

    def key_for(self, tokens: int) -> int | None:
        """The block or stage whose grid has ``tokens`` cells (stages with one grid share its
        re-roll), or None."""
        keys = [key for key, size in self.sizes if math.prod(size) == tokens]
        return keys[0] if keys else None


@dataclass(frozen=True)
class ModelFacts:
    """What a model's attributes say about a layer's layout (``None``: nothing).

    Attributes:
        prefix_tokens: Tokens before the patch grid (``P``).
        patch_size: ``(ph, pw)`` of the patch embedding, for the layers on its grid.
        grid: A grid the model fixes (timm without ``dynamic_img_size``).
        channels_last: Whether a 4-D tensor at the layer is ``(N, H, W, C)``.
        source: The attributes read, for messages.
        reroll: The model's own re-roll of unrolled tokens (Hiera), which alone reads them.
    """

    prefix_tokens: int | None = None
    patch_size: tuple[int, int] | None = None
    grid: tuple[int, ...] | None = None
    channels_last: bool | None = None
    source: str = ""
    reroll: Reroll | None = None


#: Facts that say nothing: the shapes alone decide.
NO_FACTS = ModelFacts()


def model_facts(forward_func: Any, layer: Module | None = None) -> ModelFacts:
    """The :class:`ModelFacts` of the innermost module around ``layer`` that states any.

    ``forward_func`` is the model, a bound method of it, or a function that calls it (its
    closure, globals it names and ``functools.partial`` arguments are searched for the module
    that holds ``layer``). Duck-typed: no timm, torchvision, transformers or open_clip import.
    """
    chain = _chain(forward_func, layer)
    order, order_source = _layer_order(chain)
    for depth in range(len(chain) - 1, -1, -1):
        child = chain[depth + 1] if depth + 1 < len(chain) else None
        facts = _facts_of(chain[depth], child)
        if facts is not None:
            if order is None:
                return facts
            source = f"{facts.source}; {order_source}"
            return replace(facts, channels_last=order, source=source)
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


def _facts_of(module: Module, child: Module | None = None) -> ModelFacts | None:
    """The facts ``module`` states for a layer inside its submodule ``child`` (None: itself)."""
    own = vars(module)  # instance attributes: Module.__getattr__ raises for missing names
    reroll = _hiera_reroll(module)
    if reroll is not None:
        return ModelFacts(0, None, None, None, reroll.source, reroll)
    patch_embed = own["_modules"].get("patch_embed")
    if isinstance(own.get("num_prefix_tokens"), int) and hasattr(patch_embed, "patch_size"):
        dynamic = bool(getattr(module, "dynamic_img_size", False))
        grid = getattr(patch_embed, "grid_size", None)
        prefix = own["num_prefix_tokens"]
        source = f"timm num_prefix_tokens={prefix}"
        if _class_attention_body(own["_modules"], child):
            # CaiT, XCiT: the class token joins in the class-attention blocks only
            prefix, source = 0, f"{source}, but the layer is in the blocks before the class token"
        # a hybrid's patch_embed projects CNN features: its patch_size is not the stride
        patch = (
            None if "backbone" in vars(patch_embed)["_modules"] else _pair(patch_embed.patch_size)
        )
        return ModelFacts(
            prefix,
            patch,
            None if dynamic or grid is None else tuple(int(g) for g in grid),
            None,
            f"{source}, patch_embed.patch_size={patch}"
            if patch is not None
            else f"{source}, a hybrid patch_embed (CNN backbone) of grid {grid}",
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


#: The class-attention blocks of timm's CaiT and XCiT: the blocks before them have no class token.
_CLASS_ATTENTION = ("blocks_token_only", "cls_attn_blocks")


def _class_attention_body(modules: dict[str, Module | None], child: Module | None) -> bool:
    """The layer is in ``blocks`` (or the patch embedding) of a class-attention model, before
    the class token joins (its final ``norm`` sees it again)."""
    if not any(name in modules for name in _CLASS_ATTENTION):
        return False
    return child is not None and any(child is modules.get(name) for name in _BEFORE_CLASS_TOKEN)


_BEFORE_CLASS_TOKEN = ("patch_embed", "pos_drop", "blocks")


def _hiera_reroll(module: Module) -> Reroll | None:
    """The re-roll of a timm ``Hiera`` (its ``reroll`` module, by block, and ``patch_stride``)
    or of a Hugging Face ``HieraModel`` (its encoder's ``reroll`` method, by stage, and
    ``config.patch_stride``); the grids from their ``schedule``."""
    own = vars(module)
    modules, config = own["_modules"], own.get("config")
    timm_reroll, encoder = modules.get("reroll"), modules.get("encoder")
    if timm_reroll is not None and isinstance(vars(timm_reroll).get("schedule"), dict):
        schedule, stride = vars(timm_reroll)["schedule"], own.get("patch_stride")
        function, source = timm_reroll, "timm Hiera reroll (tokens in mask-unit order)"
    elif (
        encoder is not None
        and isinstance(vars(encoder).get("schedule"), dict)
        and callable(getattr(encoder, "reroll", None))
    ):
        schedule, stride = vars(encoder)["schedule"], getattr(config, "patch_stride", None)
        function, source = encoder.reroll, "Hugging Face Hiera reroll (tokens in mask-unit order)"
    else:
        return None
    sizes = tuple((int(key), _pair(size)) for key, (_, size) in sorted(schedule.items()))
    if not sizes or stride is None:
        return None
    (height, width), (sh, sw) = sizes[0][1], _pair(stride)
    return Reroll(function, sizes, (height * sh, width * sw), source)


def _hugging_face_facts(config: Any, embeddings: Module) -> ModelFacts:
    tokens = vars(embeddings)["_parameters"]
    counts = {
        "cls_token": 1 if "cls_token" in tokens else 0,
        "class_embedding": 1 if isinstance(tokens.get("class_embedding"), Tensor) else 0,
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
    return bool(before) and list(getattr(modules[before[-1]], "dims", ())) == [0, 2, 3, 1]


_PERMUTES = ([0, 2, 3, 1], [0, 3, 1, 2])


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
    if depth > MAX_WRAPPER_DEPTH:
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


def _pair(size: Any) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    first, second = tuple(size)
    return (int(first), int(second))


__all__ = ["MAX_WRAPPER_DEPTH", "NO_FACTS", "ModelFacts", "Reroll", "model_facts"]
