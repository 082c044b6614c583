"""Read one tensor out of whatever a model returns, with errors that list what is there."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

#: A key into a model's output: a name (a dict key or a ``ModelOutput`` field), a position in a
#: tuple or list, or ``None`` for the output's default tensor.
OutputKey = str | int | None


def output_tensor(output: Any, key: OutputKey = None, defaults: Sequence[str] = ()) -> Tensor:
    """The tensor at ``key`` in a model's ``output``.

    - a tensor: itself (``key`` is for containers);
    - a mapping (a dict; a Hugging Face ``ModelOutput`` is one): ``output[key]``;
    - any other object (an attribute-style ``ModelOutput``): ``getattr(output, key)``;
    - a tuple or list: ``output[key]`` for an int ``key``.

    With ``key=None`` the first of ``defaults`` that the output has is taken, then its
    ``logits`` (the scores of a Hugging Face ``ModelOutput``).

    Raises:
        KeyError: a name the output does not have; the error lists the names it has.
        IndexError: a position outside a tuple or list.
        TypeError: a key of the wrong kind, or a value that is not a tensor.
    """
    if isinstance(output, Tensor):
        return output
    if key is None:
        return _default_tensor(output, (*defaults, "logits"))
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise TypeError(f"an output key is a name (str) or a position (int), got {key!r}")
    if isinstance(output, (tuple, list)):
        if not isinstance(key, int):
            raise TypeError(
                f"the output is a {type(output).__name__} of {len(output)}: select with an int "
                f"position, not {key!r}"
            )
        if not -len(output) <= key < len(output):
            raise IndexError(
                f"position {key} is outside the output, a {type(output).__name__} of {len(output)}"
            )
        return _tensor_at(output[key], key)
    if isinstance(key, int):
        raise TypeError(
            f"the output is a {type(output).__name__} with names {_names(output)}: select with a "
            f"name (str), not position {key}"
        )
    if not _has(output, key):
        raise KeyError(f"key {key!r} is not in the output; it has: {_listed(_names(output))}")
    return _tensor_at(_get(output, key), key)


def _default_tensor(output: Any, candidates: Sequence[str]) -> Tensor:
    if isinstance(output, (tuple, list)):
        raise TypeError(
            f"the model returns a {type(output).__name__} of {len(output)}: pass key=, the "
            "position of the tensor to use"
        )
    for name in candidates:
        if _has(output, name):
            return _tensor_at(_get(output, name), name)
    raise KeyError(
        f"none of {_listed(candidates)} is in the model's output ({type(output).__name__}); it "
        f"has: {_listed(_names(output))}: pass key="
    )


def _has(output: Any, name: str) -> bool:
    if isinstance(output, Mapping):
        return name in output
    return getattr(output, name, None) is not None


def _get(output: Any, name: str) -> Any:
    return output[name] if isinstance(output, Mapping) else getattr(output, name)


def _names(output: Any) -> list[str]:
    """The names of a mapping's keys, or an object's public attributes holding values."""
    if isinstance(output, Mapping):
        return [str(name) for name in output]
    attributes = getattr(output, "__dict__", {})
    return [
        name for name, value in attributes.items() if not name.startswith("_") and value is not None
    ]


def _listed(names: Sequence[str]) -> str:
    return ", ".join(repr(name) for name in names) if names else "nothing"


def _tensor_at(value: Any, key: str | int) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"the output's {key!r} is {type(value).__name__}, not a tensor")
    return value


__all__ = ["OutputKey", "output_tensor"]
