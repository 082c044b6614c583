"""The CAM methods by name: one registry that every list of methods reads.

A method class registers itself with :func:`register_method`; from then on its display name and
aliases work wherever a method is named: :class:`~captum_camplus.LayerCams`, the metrics'
``cam_explain`` and ``evaluate_methods``, and the ``camplus`` command. Names are matched
leniently: "Grad-CAM++", "gradcam++", "grad_cam_plus_plus" and "LayerGradCamPlusPlus" are one.

>>> @register_method("XGrad-CAM", "xgradcam")
... class LayerXGradCam(CamAttribution):
...     def weights(self, activation, gradient): ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TypeVar

from captum_camplus.base import CamAttribution

Method = TypeVar("Method", bound=type[CamAttribution])

_CLASSES: dict[str, type[CamAttribution]] = {}  # display name -> class, in registration order
_KEYS: dict[str, str] = {}  # squashed name or alias -> display name

#: The registered methods by display name, in registration order (a read-only live view).
METHODS: Mapping[str, type[CamAttribution]] = MappingProxyType(_CLASSES)


def register_method(name: str, *aliases: str) -> Callable[[Method], Method]:
    """Class decorator: make a :class:`CamAttribution` subclass known by ``name`` and ``aliases``.

    The class's own name is an alias too. Registering a class again under the same names (a
    re-run notebook cell, a reloaded module) replaces it; a name already taken by another class
    raises ``ValueError``.
    """
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"a method's display name must be a non-empty string, got {name!r}")

    def register(cls: Method) -> Method:
        if not (isinstance(cls, type) and issubclass(cls, CamAttribution)):
            raise TypeError(f"register_method decorates CamAttribution subclasses, not {cls!r}")
        keys = {_squash(key) for key in (name, *aliases, cls.__name__)}
        for key in keys:
            owner = _KEYS.get(key)
            if owner is not None and owner != name and not _same_class(_CLASSES[owner], cls):
                raise ValueError(
                    f"cannot register {cls.__qualname__} as {name!r}: {key!r} already names "
                    f"{owner!r} ({_CLASSES[owner].__qualname__})"
                )
        current = _CLASSES.get(name)
        if current is not None and not _same_class(current, cls):
            raise ValueError(
                f"the method name {name!r} is taken by {current.__module__}.{current.__qualname__}"
            )
        _CLASSES[name] = cls
        _KEYS.update(dict.fromkeys(keys, name))
        return cls

    return register


def method_name(name: str) -> str:
    """The display name of a registered method, from any of its names (matched leniently)."""
    if not isinstance(name, str):
        raise TypeError(f"a method name is a string, got {type(name).__name__}")
    display = _KEYS.get(_squash(name))
    if display is None:
        raise ValueError(f"unknown CAM method {name!r}; choose from {', '.join(_CLASSES)}")
    return display


def method_class(name: str) -> type[CamAttribution]:
    """The class of a registered method, from any of its names (matched leniently)."""
    return _CLASSES[method_name(name)]


def _squash(name: str) -> str:
    squashed = "".join(c for c in name.lower() if c not in " -_").replace("plus", "+")
    return squashed.removeprefix("layer")


def _same_class(a: type, b: type) -> bool:
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


__all__ = ["METHODS", "method_class", "method_name", "register_method"]
