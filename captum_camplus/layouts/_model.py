"""What a model's attributes say about a layer's layout: duck-typed readers of timm,
torchvision, Hugging Face and open_clip internals.

The one part of :mod:`captum_camplus.layouts` that follows other libraries' releases: it reads
their attributes by name (no timm, torchvision, transformers or open_clip import) and finds the
module that holds a layer behind a wrapper, a bound method, a lambda or a ``functools.partial``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torch.nn import Module, Sequential

#: How many wrappers deep (partials, closures, globals a function names) the search for the
#: model behind a forward function goes: a lambda calling a method of a wrapper is three.
MAX_WRAPPER_DEPTH = 3


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


__all__ = ["MAX_WRAPPER_DEPTH", "NO_FACTS", "ModelFacts", "model_facts"]
