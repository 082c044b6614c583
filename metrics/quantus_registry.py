"""Listing this package's metrics in ``quantus.available_metrics()``.

Quantus has no plugin hook: ``available_metrics()`` reads the dict
``quantus.helpers.constants.AVAILABLE_METRICS`` (category -> display name -> class), so the
entries are added to that dict in place (never rebinding it, which other modules hold).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

from quantus.helpers import constants


def register(metrics: Mapping[str, type], category: str = "Faithfulness") -> list[str]:
    """Add ``metrics`` (display name -> class) to Quantus' registry under ``category``.

    Idempotent. A name that Quantus already lists for another class is left alone, with a
    warning; a class of the same module and name (this package, reloaded) is replaced.

    Returns:
        The names now registered to the given classes.
    """
    entries = constants.AVAILABLE_METRICS.setdefault(category, {})
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


__all__ = ["register"]
