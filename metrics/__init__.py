"""The metrics of the Grad-CAM++ and Grad-CAM+ papers, exactly as defined, for Quantus.

- :mod:`metrics.functional`: the formulas on tensors (average drop, increase in confidence,
  win %, relative performance, dead-zone mass) and their paired bootstrap intervals
  (:mod:`metrics.intervals`); :mod:`metrics.digits` prints values to the digits their intervals
  support.
- Quantus metrics :class:`AverageDrop`, :class:`IncreaseInConfidence`, :class:`WinPercentage`,
  :class:`RelativePerformance`, :class:`DeadZoneMass`, listed in ``quantus.available_metrics()``
  under "Faithfulness" as soon as this package is imported.
- :func:`cam_explain`: a Quantus ``explain_func`` for the ``captum_camplus`` methods.
- :func:`evaluate_methods`: every metric for several methods over a data set, one CAM pass per
  batch, with Lerma & Lucas' relative-performance tables; works under ``torch.distributed``.
  :class:`BatchScorer` is its per-batch step, for callers that stream results.

The formulas, the explanation maps and the driver need only the core (torch, captum, numpy);
the Quantus metrics need the ``metrics`` extra. The package is also importable as
``captum_camplus.metrics``, a name no module of a user's project can shadow.

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
"""

from .confidence import cam_dead_zone_mass, class_scores, explanation_maps
from .evaluate import BatchScorer, BatchScores, EvaluationResult, evaluate_methods
from .functional import (
    PairComparison,
    RelativePerformanceIntervals,
    RelativePerformanceStats,
    ScoreIntervals,
    average_drop,
    compare_pair,
    dead_zone_mass,
    increase_in_confidence,
    relative_performance,
    relative_performance_intervals,
    score_intervals,
    sign_test,
    win_percentage,
)
from .heatmaps import MAPS_FROM, cam_explain, compute_cams

try:
    import quantus  # noqa: F401
except ImportError:  # the formulas and the driver work without it
    _QUANTUS_MISSING = True
else:
    _QUANTUS_MISSING = False
    from .quantus_adapter import CamMetric
    from .quantus_metrics import (
        QUANTUS_METRICS,
        AverageDrop,
        DeadZoneMass,
        IncreaseInConfidence,
        RelativePerformance,
        WinPercentage,
    )
    from .quantus_registry import register

    register(QUANTUS_METRICS)

#: Names that exist only with Quantus installed.
_NEED_QUANTUS = frozenset(
    {
        "QUANTUS_METRICS",
        "AverageDrop",
        "CamMetric",
        "DeadZoneMass",
        "IncreaseInConfidence",
        "RelativePerformance",
        "WinPercentage",
        "register",
    }
)


def __getattr__(name: str) -> object:
    if _QUANTUS_MISSING and name in _NEED_QUANTUS:
        raise ImportError(
            f"metrics.{name} is a Quantus metric and Quantus is not installed: "
            'pip install "captum-camplus[metrics]"'
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MAPS_FROM",
    "QUANTUS_METRICS",
    "AverageDrop",
    "BatchScorer",
    "BatchScores",
    "CamMetric",
    "DeadZoneMass",
    "EvaluationResult",
    "IncreaseInConfidence",
    "PairComparison",
    "RelativePerformance",
    "RelativePerformanceIntervals",
    "RelativePerformanceStats",
    "ScoreIntervals",
    "WinPercentage",
    "average_drop",
    "cam_dead_zone_mass",
    "cam_explain",
    "class_scores",
    "compare_pair",
    "compute_cams",
    "dead_zone_mass",
    "evaluate_methods",
    "explanation_maps",
    "increase_in_confidence",
    "register",
    "relative_performance",
    "relative_performance_intervals",
    "score_intervals",
    "sign_test",
    "win_percentage",
]
