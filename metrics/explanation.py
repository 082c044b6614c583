"""Deprecated name of :mod:`metrics.confidence`; importing it warns and gives the same names."""

import warnings

from .confidence import *  # noqa: F403
from .confidence import __all__  # noqa: F401

warnings.warn(
    "metrics.explanation is deprecated: import from metrics.confidence (or from metrics)",
    DeprecationWarning,
    stacklevel=2,
)
