"""Listing metrics in ``quantus.available_metrics()``.

Quantus has no plugin hook: ``available_metrics()`` reads the dict
``quantus.helpers.constants.AVAILABLE_METRICS`` (category -> display name -> class), so the
entries are added to that dict in place (never rebinding it, which other modules hold).
:mod:`metrics.quantus_metrics` lists this package's five metrics when it is first imported.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

from quantus import Metric
from quantus.helpers import constants


def register_quantus_metrics(
    metrics: Mapping[str, type[Metric]], category: str = "Faithfulness"
) -> list[str]:
    """Add ``metrics`` (display name -> class) to Quantus' registry under ``category``.

    Idempotent. A name that Quantus already lists for another class is left alone, with a
    warning; a class of the same module and name (this package, reloaded) is replaced.

    Returns:
        The names now registered to the given classes.
    """
    registry = constants.AVAILABLE_METRICS
    if not isinstance(registry, dict):  # Quantus 0.6 declares a Mapping; a dict is what it holds
        raise TypeError(f"quantus' AVAILABLE_METRICS is a {type(registry).__name__}, not a dict")
    entries = registry.setdefault(category, {})
    if not isinstance(entries, dict):
        raise TypeError(f"quantus lists {category!r} as a {type(entries).__name__}, not a dict")
    registered = []
    for name, cls in metrics.items():
        current = entries.get(name)
        if current is None or _same_class(current, cls):
            entries[name] = cls
            registered.append(name)
        else:
            warnings.warn(
                f"quantus already lists {name!r} under {category!r} for "
                f"{current.__module__}.{current.__qualname__}; {cls.__qualname__} is not "
                "registered under that name",
                stacklevel=2,
            )
    return registered


def _same_class(a: type, b: type) -> bool:
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


__all__ = ["register_quantus_metrics"]
