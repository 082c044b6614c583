"""The ``metrics`` package under a name that no module of a user's project can shadow.

``import captum_camplus.metrics`` gives the same module as ``import metrics`` (this distribution's
metrics layer, which is its canonical home). A project with a ``metrics.py`` or ``metrics/`` of
its own on ``sys.path`` hides that top-level name; this alias still finds this distribution's
package by its location beside ``captum_camplus`` and loads it under this name.

Nothing in the core imports this module: ``import captum_camplus`` loads no metrics code.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_PACKAGE = Path(__file__).resolve().parent.parent / "metrics" / "__init__.py"


def _is_this_distribution(module: ModuleType | None) -> bool:
    origin = getattr(module, "__file__", None)
    return origin is not None and Path(origin).resolve() == _PACKAGE


def _metrics_package() -> ModuleType:
    loaded = sys.modules.get("metrics")
    if _is_this_distribution(loaded):
        return loaded  # type: ignore[return-value]
    if loaded is None:
        spec = importlib.util.find_spec("metrics")
        if spec is not None and spec.origin and Path(spec.origin).resolve() == _PACKAGE:
            return importlib.import_module("metrics")
    # `metrics` is someone else's: load this distribution's package under this module's name
    # (its modules import each other relatively, so they work under any name).
    spec = importlib.util.spec_from_file_location(
        __name__, _PACKAGE, submodule_search_locations=[str(_PACKAGE.parent)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"captum-camplus's metrics package is missing from {_PACKAGE.parent}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[__name__] = module
    spec.loader.exec_module(module)
    return module


def _alias(package: ModuleType) -> None:
    """Register the package and its loaded modules under this name too, so that
    ``import captum_camplus.metrics.functional`` gives the same module, not a second copy."""
    prefix = package.__name__
    for name, module in list(sys.modules.items()):
        if name == prefix or name.startswith(prefix + "."):
            sys.modules[__name__ + name[len(prefix) :]] = module


_alias(_metrics_package())
