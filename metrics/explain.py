"""Deprecated name of :mod:`metrics.heatmaps`; importing it warns and gives the same names."""

import warnings

from .heatmaps import *  # noqa: F403
from .heatmaps import __all__  # noqa: F401

warnings.warn(
    "metrics.explain is deprecated: import from metrics.heatmaps (or from metrics)",
    DeprecationWarning,
    stacklevel=2,
)
