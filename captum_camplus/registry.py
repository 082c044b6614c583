"""The CAM methods by name: one registry that every list of methods reads.

A method class registers itself with :func:`register_method`; from then on its display name and
aliases work wherever a method is named: :class:`~captum_camplus.LayerCams`, the metrics'
``cam_explain`` and ``evaluate_methods``, and the ``camplus`` command. Names are matched
leniently: case, spaces, "-" and "_" do not count and "plus" is "+", so "Grad-CAM++",
"gradcam++" and "grad_cam_plus_plus" are one; no word is dropped ("LayerCAM" and "CAM" are two).

>>> @register_method("Abs-Grad-CAM", "absgradcam")
... class LayerAbsGradCam(CamAttribution):
...     def weights(self, activation, gradient): ...

Methods in other installed packages (plugins) are found through the entry-point group
``captum_camplus.methods``: each entry's value is ``module:Class``, a class that the module
registers with the decorator on import. They are loaded once, the first time the registry is
read; one that fails to load is reported in a warning that names it, and skipped. In a plugin's
``pyproject.toml``::

    [project.entry-points."captum_camplus.methods"]
    absgradcam = "my_cams.abs_grad_cam:LayerAbsGradCam"

Every reader that is given no list of methods (:class:`~captum_camplus.LayerCams`, the metrics,
``camplus compare``, the benchmark) takes :data:`DEFAULT_METHODS`: the methods registered with
``default=True`` (the decorator's default; the built-in catalogue beyond the four seed methods
registers with ``default=False``, so adding to it changes no default table). The name
:data:`ALL` (``"all"``) in a list stands for every registered method (:func:`resolve_methods`).
"""

from __future__ import annotations

import inspect
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import TypeVar

from captum_camplus.base import CamAttribution

Method = TypeVar("Method", bound=type[CamAttribution])

#: The entry-point group of the methods of other installed packages.
ENTRY_POINT_GROUP = "captum_camplus.methods"

_CLASSES: dict[str, type[CamAttribution]] = {}  # display name -> class, in registration order
_KEYS: dict[str, str] = {}  # squashed name or alias -> display name
_DEFAULTS: set[str] = set()  # display names read when no list of methods is given
#: In a list of method names, every registered method.
ALL = "all"
_plugins_loaded = False  # set once every plugin is imported: the fast path of every read
_plugins_loading = False  # set before the imports: a plugin's own import reads the registry
#: Held while the plugins load: another thread's read waits for the whole registry.
_PLUGIN_LOCK = threading.RLock()


class _Registry(Mapping[str, type[CamAttribution]]):
    """A read-only live view of the registered methods (or of the default ones) that loads the
    plugins when first read."""

    def __init__(self, name: str, defaults_only: bool, family: str | None = None) -> None:
        self._name = name
        self._defaults_only = defaults_only
        self._family = family

    def _names(self) -> list[str]:
        load_plugins()
        return [
            n
            for n, cls in _CLASSES.items()
            if (not self._defaults_only or n in _DEFAULTS)
            and (self._family is None or cls.family == self._family)
        ]

    def __getitem__(self, name: str) -> type[CamAttribution]:
        if name not in self._names():
            raise KeyError(name)
        return _CLASSES[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return f"{self._name}({self._names()})"


#: The registered methods by display name, in registration order (a read-only live view; the
#: built-in methods first, then the plugins').
METHODS: Mapping[str, type[CamAttribution]] = _Registry("METHODS", defaults_only=False)
#: The methods every reader takes when given no list: those registered with ``default=True``
#: (today Grad-CAM, Grad-CAM+, Grad-CAM++, HiResCAM and the plugins'), a live view of METHODS.
DEFAULT_METHODS: Mapping[str, type[CamAttribution]] = _Registry("DEFAULT_METHODS", True)
#: The registered methods of each ``CamAttribution.family``: ``"gradient"`` (maps from ``A`` and
#: ``g``, differentiable with ``create_graph``) and ``"perturbation"`` (Score-CAM, Ablation-CAM:
#: weights from further forwards of the model), live views of METHODS.
FAMILIES: Mapping[str, Mapping[str, type[CamAttribution]]] = {
    family: _Registry(f"FAMILIES[{family!r}]", False, family)
    for family in ("gradient", "perturbation")
}


def resolve_methods(names: Iterable[str] | None) -> list[str]:
    """Display names of a list of method names: ``None`` gives :data:`DEFAULT_METHODS`, and
    :data:`ALL` in the list every registered method; duplicates are dropped, order kept."""
    if names is None:
        return list(DEFAULT_METHODS)
    if isinstance(names, str):
        raise TypeError(f"methods is a list of names, not one string: pass [{names!r}]")
    chosen: list[str] = []
    for name in names:
        is_all = isinstance(name, str) and _squash(name) == ALL
        chosen.extend(METHODS if is_all else [method_name(name)])
    return list(dict.fromkeys(chosen))


def register_method(name: str, *aliases: str, default: bool = True) -> Callable[[Method], Method]:
    """Class decorator: make a :class:`CamAttribution` subclass known by ``name`` and ``aliases``.

    The class's own name is an alias too. ``default=False`` keeps it out of
    :data:`DEFAULT_METHODS` (it is then computed only when named, or with :data:`ALL`).
    Registering a class again under the same names (a re-run notebook cell, a reloaded module)
    replaces it; a name already taken by another class
    raises ``ValueError``; an abstract class (no ``weights``) or a class that is not a
    :class:`CamAttribution` raises ``TypeError``.
    """
    if not isinstance(name, str) or not _squash(name):
        raise TypeError(f"a method's display name must be a non-empty string, got {name!r}")
    for alias in aliases:
        if not isinstance(alias, str) or not _squash(alias):
            raise TypeError(f"a method's alias must be a non-empty string, got {alias!r}")
    if ALL in {_squash(key) for key in (name, *aliases)}:
        raise ValueError(f"{ALL!r} stands for every registered method: choose another name")
    if not isinstance(default, bool):
        raise TypeError(f"default is True or False, got {default!r}")

    def register(cls: Method) -> Method:
        if not (isinstance(cls, type) and issubclass(cls, CamAttribution)):
            raise TypeError(
                f"register_method decorates CamAttribution subclasses (a class with a "
                f"weights(activation, gradient) rule), not {cls!r}"
            )
        if inspect.isabstract(cls):
            missing = ", ".join(sorted(cls.__abstractmethods__))
            raise TypeError(
                f"cannot register {cls.__qualname__} as {name!r}: it is abstract (no {missing}); "
                "register a subclass that implements it"
            )
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
        if current is not None:  # re-registered: its old aliases go
            _drop_keys(name)
        _CLASSES[name] = cls
        _KEYS.update(dict.fromkeys(keys, name))
        if default:
            _DEFAULTS.add(name)
        else:
            _DEFAULTS.discard(name)
        return cls

    return register


def unregister_method(name: str) -> type[CamAttribution]:
    """Remove a registered method (any of its names) with all its aliases; return its class.

    Raises ``ValueError`` for a name that no method has.
    """
    display = method_name(name)
    _drop_keys(display)
    _DEFAULTS.discard(display)
    return _CLASSES.pop(display)


def method_name(name: str) -> str:
    """The display name of a registered method, from any of its names (matched leniently)."""
    if not isinstance(name, str):
        raise TypeError(f"a method name is a string, got {type(name).__name__}")
    load_plugins()
    display = _KEYS.get(_squash(name))
    if display is None:
        raise ValueError(f"unknown CAM method {name!r}; choose from {', '.join(_CLASSES)}")
    return display


def display_name(cls: type) -> str:
    """The name ``cls`` is registered under, or its class name if it is not registered."""
    load_plugins()
    return next((name for name, known in _CLASSES.items() if known is cls), cls.__name__)


def method_class(name: str) -> type[CamAttribution]:
    """The class of a registered method, from any of its names (matched leniently)."""
    return _CLASSES[method_name(name)]


def load_plugins() -> None:
    """Import the methods of the entry-point group :data:`ENTRY_POINT_GROUP`, once.

    Called by every read of the registry, so there is no need to call it. Each entry's value is
    ``module:Class``; importing the module registers the class (its ``@register_method``). A
    plugin that cannot be imported, names no registered :class:`CamAttribution`, or clashes
    with a registered name is skipped with a warning that names it.
    """
    global _plugins_loaded, _plugins_loading
    if _plugins_loaded:
        return
    with _PLUGIN_LOCK:  # re-entered by the loading thread only, where _plugins_loading is set
        if _plugins_loading:
            return
        _plugins_loading = True
        try:
            _load_entry_points()
        finally:
            _plugins_loaded = True


def _load_entry_points() -> None:
    seen = set()
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if (entry.name, entry.value) in seen:
            continue  # the same distribution found twice on sys.path
        seen.add((entry.name, entry.value))
        problem = _load_plugin(entry)
        if problem:
            warnings.warn(
                f"captum_camplus: the method plugin {entry.name!r} ({entry.value}) is skipped: "
                f"{problem}",
                RuntimeWarning,
                stacklevel=4,
            )


def _load_plugin(entry: EntryPoint) -> str | None:
    """Load one entry point; return what is wrong with it, or None."""
    try:
        loaded = entry.load()
    except Exception as error:  # a plugin's failure must not stop the library: reported
        return f"{type(error).__name__}: {error}"
    if not (isinstance(loaded, type) and issubclass(loaded, CamAttribution)):
        return f"it names {loaded!r}, not a CamAttribution subclass"
    if not any(cls is loaded for cls in _CLASSES.values()):
        return (
            f"{loaded.__qualname__} is not registered on import: decorate it with "
            "@register_method(name)"
        )
    return None


def _drop_keys(display: str) -> None:
    for key in [key for key, owner in _KEYS.items() if owner == display]:
        del _KEYS[key]


def _squash(name: str) -> str:
    return "".join(c for c in name.lower() if c not in " -_").replace("plus", "+")


def _same_class(a: type, b: type) -> bool:
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


__all__ = [
    "ALL",
    "DEFAULT_METHODS",
    "ENTRY_POINT_GROUP",
    "FAMILIES",
    "METHODS",
    "display_name",
    "load_plugins",
    "method_class",
    "method_name",
    "register_method",
    "resolve_methods",
    "unregister_method",
]
