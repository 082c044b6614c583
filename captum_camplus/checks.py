"""What the CAM methods check before and around the model pass, so bad input is named in our terms.

Each check turns a case that would otherwise fail deep inside torch or Captum, or worse return a
wrong map, into an error that says what is wrong and what to pass instead: a TorchScript model
(its hooks never run), a layer that is not a module, an empty batch, targets that are not class
indices or do not fit the model's output, a layer whose output does not reach the score, options
of the wrong type.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import numbers
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from captum._utils.typing import TargetType
from torch import Tensor
from torch.nn import Module

#: Autograd's messages for a differentiated tensor that the output does not depend on.
_UNREACHED = (
    "appears to not have been used in the graph",
    "does not require grad and does not have a grad_fn",
)


def check_hookable(forward_func: Callable[..., Any], layer: Any) -> None:
    """Refuse what forward hooks cannot observe: a layer that is no module, or TorchScript."""
    if isinstance(layer, torch.jit.ScriptModule) or isinstance(
        forward_func, (torch.jit.ScriptModule, torch.jit.ScriptFunction)
    ):
        raise TypeError(
            "TorchScript models (torch.jit.trace / torch.jit.script) never run Python forward "
            "hooks, so no hook-based attribution (Captum's or this package's) can see a layer "
            "inside them: pass the eager nn.Module and its layer (torch.compile models work)"
        )
    if not isinstance(layer, Module):
        raise TypeError(
            f"layer must be an nn.Module of the model (e.g. model.layer4), got "
            f"{type(layer).__name__}"
        )
    if not callable(forward_func):
        raise TypeError(f"forward_func must be the model or a callable, got {forward_func!r}")


def check_flag(name: str, value: Any) -> bool:
    """A boolean option, refusing values such as the string "no" that would read as True."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_positive(name: str, value: Any, meaning: str = "") -> float:
    """A finite, positive real option (inf or NaN could only give NaN or empty maps)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}{meaning} must be a real number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}{meaning} must be finite and > 0, got {value}")
    return value


def check_inputs(inputs: Any) -> None:
    """Inputs are a tensor or a tuple of tensors, with a non-empty batch dimension."""
    tensors = inputs if isinstance(inputs, tuple) else (inputs,)
    for tensor in tensors:
        if not isinstance(tensor, Tensor):
            raise TypeError(
                f"inputs must be a torch.Tensor or a tuple of them, got {type(tensor).__name__} "
                "(convert with torch.as_tensor)"
            )
    if not tensors:
        raise ValueError("inputs is an empty tuple: pass the batch to explain")
    first = tensors[0]
    if first.dim() == 0 or first.shape[0] == 0:
        raise ValueError(
            f"the batch is empty (inputs of shape {tuple(first.shape)}): nothing to explain"
        )


def check_target(target: Any, batch_size: int) -> TargetType:
    """Validate ``target`` without the model's output, in Captum's accepted forms.

    Numpy integers and integer arrays are taken as Python ints and tensors. Class indices must
    be non-negative (a -1 would select the last class, as Python indexing does) and a tensor
    must hold integers: one for the batch, or one per example (1-D).

    Returns:
        The target, with numpy values converted.
    """
    if target is None:
        return None
    if isinstance(target, np.ndarray):
        target = torch.as_tensor(target)
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target tensor must hold integer class indices, got {target.dtype}")
        if target.numel() != 1 and target.dim() != 1:
            raise ValueError(
                f"a target tensor must be one index or 1-D with one per example, got shape "
                f"{tuple(target.shape)} (flatten it)"
            )
        if target.numel() not in (1, batch_size):
            raise ValueError(
                f"got {target.numel()} targets for a batch of {batch_size} examples: pass one "
                "target for the whole batch or exactly one per example"
            )
        return target
    if isinstance(target, list):
        if len(target) != batch_size:
            raise ValueError(
                f"got {len(target)} targets for a batch of {batch_size} examples: pass one "
                "target for the whole batch or exactly one per example"
            )
        return [_index_or_tuple(t) for t in target]
    return _index_or_tuple(target)


def _index_or_tuple(target: Any) -> int | tuple[Any, ...]:
    if isinstance(target, tuple):
        return tuple(t if isinstance(t, slice) else _index(t) for t in target)
    return _index(target)


def _index(value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"a target is a class index (int), one per example (list or 1-D integer tensor) or "
            f"a tuple of indices; got {value!r} of type {type(value).__name__}"
        )
    if value < 0:
        raise ValueError(
            f"target {int(value)} is negative: class indices start at 0 (a negative index would "
            "pick a class from the end)"
        )
    return int(value)


def checked_forward(
    forward_func: Callable[..., Any], target: TargetType, batch_size: int
) -> Callable[..., Any]:
    """``forward_func`` with its output checked against the batch and ``target`` before Captum
    selects the score: a tensor with one row per example, and targets inside its shape. A
    Hugging Face ``ModelOutput`` (any object with a tensor ``.logits``) gives its ``.logits``
    (:func:`model_scores`)."""

    def forward(*args: Any, **kwargs: Any) -> Any:
        output = model_scores(forward_func(*args, **kwargs))
        check_output(output, target, batch_size)
        return output

    # Captum reads the signature to decide whether to pass the inputs; a callable without one
    # (a builtin) gets them, as it would unwrapped
    with contextlib.suppress(TypeError, ValueError):
        forward.__signature__ = inspect.signature(forward_func)  # type: ignore[attr-defined]
    if hasattr(forward_func, "device_ids"):  # DataParallel: Captum reads it from the forward
        forward.device_ids = forward_func.device_ids  # type: ignore[attr-defined]
    return forward


def model_scores(output: Any) -> Any:
    """The scores in a model's output: a tensor as it is, the ``.logits`` of a Hugging Face
    ``ModelOutput`` or of any object with a tensor ``.logits``; anything else unchanged (for
    :func:`check_output` to refuse)."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    return logits if isinstance(logits, Tensor) else output


def warn_if_no_gradient(gradient: Tensor, layer: Module) -> None:
    """Warn when the score's gradient is exactly zero at every grid position of every image."""
    if gradient.numel() and _all_zero(gradient):
        warnings.warn(
            f"the score's gradient is exactly zero on the whole grid of the layer "
            f"{type(layer).__name__} for every image, so every map is zero: the output does not "
            "depend on these positions (e.g. a ViT's patch tokens after the last block's "
            "attention, where only the class token reaches the head); pick an earlier layer, "
            "such as the last block's norm1",
            stacklevel=4,
        )


def _all_zero(tensor: Tensor) -> bool:
    """Whether every entry is zero: one host synchronisation (``aminmax`` runs several times
    faster on a CPU than ``Tensor.any``; NaN counts as non-zero in both)."""
    low, high = torch.aminmax(tensor)
    return bool((low == 0) & (high == 0))


def check_output(output: Any, target: TargetType, batch_size: int) -> None:
    """The model's output can give one score per example for ``target``."""
    if not isinstance(output, Tensor):
        raise TypeError(
            f"the model returns {type(output).__name__}, not a tensor of scores nor an object "
            "with a tensor .logits: wrap it so it returns one, e.g. "
            "captum_camplus.targets.OutputSelect(model, key) for a dict or tuple (or "
            "lambda x: model(x)[0])"
        )
    shape = tuple(output.shape)
    if output.dim() == 0:
        raise ValueError(
            "the model returns a 0-dim scalar: return one score per example, shape (N,), or "
            "one for the whole batch as shape (1,)"
        )
    if target is None and output.numel() == 1:
        return  # one score for the whole batch, e.g. a sum: its gradients are per example
    if shape[0] != batch_size:
        raise ValueError(
            f"the model returns shape {shape} for a batch of {batch_size} examples: the first "
            "dimension must be the batch (an input without its batch dimension? add it with "
            "x.unsqueeze(0))"
        )
    if target is None:
        if output[0].numel() != 1:
            raise ValueError(
                f"the model returns {shape[1:]} scores per example: pass target= (the class to "
                "explain), or a forward function returning one score per example"
            )
        return
    indices = [target] if not isinstance(target, list) else target
    for index in indices:
        _check_index_fits(index, shape, target)


def _check_index_fits(index: Any, shape: tuple[int, ...], target: TargetType) -> None:
    if len(shape) < 2:
        raise ValueError(
            f"the model returns one score per example (shape {shape}): pass target=None"
        )
    _check_one_score_per_example(index, shape, target)
    several = isinstance(index, Tensor) and index.numel() > 1
    per_example_indices = several or (isinstance(target, list) and not isinstance(index, tuple))
    if per_example_indices and len(shape) != 2:  # Captum gathers them from (N, classes) only
        raise ValueError(
            f"a list or tensor of per-example class indices needs (N, classes) scores, got {shape}"
        )
    if isinstance(index, Tensor):
        if bool(((index < 0) | (index >= shape[1])).any()):  # host sync, tensor targets only
            raise ValueError(
                f"targets must be class indices in [0, {shape[1]}) for scores of shape "
                f"{shape}, got {index.tolist()}"
            )
        return
    parts = index if isinstance(index, tuple) else (index,)
    if len(parts) > len(shape) - 1:
        raise ValueError(
            f"target {index!r} has {len(parts)} indices but the scores of shape {shape} have "
            f"{len(shape) - 1} dimension(s) per example"
        )
    for part, size in zip(parts, shape[1:], strict=False):
        if isinstance(part, int) and not 0 <= part < size:
            raise ValueError(
                f"target {index!r} is out of range for scores of shape {shape}: class indices "
                f"lie in [0, {size})"
            )


def _check_one_score_per_example(index: Any, shape: tuple[int, ...], target: TargetType) -> None:
    """A target picks one score per example: on ``(N, K, H, W)`` segmentation logits an int
    picks ``H * W`` of them (Captum's ``_select_targets`` indexes dim 1 only), which Captum's
    LayerGradCam refuses in autograd and a summed score would explain silently, so every class
    and pass refuses it here with the same error. A tuple with one index per dimension after
    the batch, e.g. ``(k, i, j)``, still picks one element, as in Captum."""
    if isinstance(index, tuple) and any(isinstance(part, slice) for part in index):
        return  # slices select as in Captum
    if isinstance(index, Tensor) and index.numel() > 1:
        picked = 1  # one index per example, along dim 1
    else:
        picked = len(index) if isinstance(index, tuple) else 1
    per_example = math.prod(shape[1 + picked :])
    if per_example > 1:
        shown = target.tolist() if isinstance(target, Tensor) else target
        raise ValueError(
            f"target {shown!r} picks {per_example} scores per example from the model's output "
            f"of shape {shape}, but a CAM explains one score per example (an int target "
            "indexes dimension 1 only): wrap the model so that it returns (N, K) scores, e.g. "
            "captum_camplus.targets.SegmentationScores(model) for segmentation logits "
            "(N, K, H, W), or captum_camplus.targets.OutputSelect(model, key) for one tensor "
            "of a dict or tuple output; a tuple target with one index per dimension after the "
            "batch, such as (k, i, j), still picks one element, as in Captum"
        )


def unreached_layer_error(error: RuntimeError, layer: Module) -> ValueError | None:
    """Autograd's error for a layer the score does not depend on, in our terms (else None)."""
    if not any(text in str(error) for text in _UNREACHED):
        return None
    return ValueError(
        f"the score does not depend on the output of the layer {type(layer).__name__}: the "
        "forward pass calls it but its output does not reach the model's output through "
        "autograd (unused, detached, or computed under torch.no_grad()); pass a layer on the "
        "path to the output"
    )


def non_tensor_output_error(layer: Module, output: Any) -> ValueError:
    """The error for a layer whose output is not a tensor or a tuple of tensors, e.g. the
    ``(hidden_states, None)`` of a Hugging Face layer: one text for every class."""
    kinds = (
        "(" + ", ".join(type(item).__name__ for item in output) + ")"
        if isinstance(output, tuple)
        else type(output).__name__
    )
    return ValueError(
        f"the layer {type(layer).__name__} returns {kinds}, not a tensor or a tuple of tensors: "
        "pick the submodule that makes the tensor you want explained (for a Hugging Face layer "
        "returning (hidden_states, None), its mlp, output or layer norm)"
    )


def layer_output_error(
    forward_func: Callable[..., Any], layer: Module, inputs: tuple[Any, ...]
) -> ValueError:
    """:func:`non_tensor_output_error` for what ``layer`` returns on ``inputs`` (one more
    forward, on the error path only: Captum's hook does not say what it got)."""
    seen: list[Any] = []
    handle = layer.register_forward_hook(lambda module, args, output: seen.append(output))
    try:
        with torch.no_grad():
            forward_func(*inputs)
    finally:
        handle.remove()
    return non_tensor_output_error(layer, seen[-1] if seen else None)


def not_called_error(layer: Module, forward_func: Callable[..., Any]) -> ValueError:
    """The error for a layer whose forward hook never ran."""
    hint = ""
    if not isinstance(forward_func, Module):
        hint = (
            " (if forward_func calls a TorchScript model, its layers never run Python hooks: "
            "use the eager model)"
        )
    return ValueError(
        f"the layer {type(layer).__name__} was not called by the forward pass: pass a module "
        f"that the model uses when computing its output{hint}"
    )


def check_grad_kwargs(grad_kwargs: Any) -> None:
    """``grad_kwargs`` is None or a mapping of ``torch.autograd.grad`` options."""
    if grad_kwargs is not None and not isinstance(grad_kwargs, dict):
        raise TypeError(
            f"grad_kwargs must be a dict of torch.autograd.grad options, got "
            f"{type(grad_kwargs).__name__}"
        )


__all__ = [
    "check_flag",
    "check_grad_kwargs",
    "check_hookable",
    "check_inputs",
    "check_output",
    "check_positive",
    "check_target",
    "checked_forward",
    "model_scores",
    "not_called_error",
    "unreached_layer_error",
    "warn_if_no_gradient",
]
