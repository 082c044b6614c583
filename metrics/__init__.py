"""The metrics of the Grad-CAM++ and Grad-CAM+ papers, exactly as defined, for Quantus.

- :mod:`metrics.functional`: the formulas on tensors (average drop, increase in confidence,
  win %, relative performance, dead-zone mass).
- Quantus metrics :class:`AverageDrop`, :class:`IncreaseInConfidence`, :class:`WinPercentage`,
  :class:`RelativePerformance`, :class:`DeadZoneMass`, listed in ``quantus.available_metrics()``
  under "Faithfulness" as soon as this package is imported.
- :func:`cam_explain`: a Quantus ``explain_func`` for the ``captum_camplus`` methods.
- :func:`evaluate_methods`: every metric for several methods over a data set, one CAM pass per
  batch, with 001's relative-performance tables; works under ``torch.distributed``.
  :class:`BatchScorer` is its per-batch step, for callers that stream results.
"""

from metrics.evaluate import BatchScorer, BatchScores, EvaluationResult, evaluate_methods
from metrics.explain import MAPS_FROM, cam_explain, compute_cams
from metrics.explanation import cam_dead_zone_mass, class_scores, explanation_maps
from metrics.functional import (
    RelativePerformanceStats,
    average_drop,
    band_mask,
    dead_zone_mass,
    increase_in_confidence,
    relative_performance,
    win_percentage,
)
from metrics.quantus_adapter import CamMetric
from metrics.quantus_metrics import (
    QUANTUS_METRICS,
    AverageDrop,
    DeadZoneMass,
    IncreaseInConfidence,
    RelativePerformance,
    WinPercentage,
)
from metrics.registry import register

register(QUANTUS_METRICS)

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
    "RelativePerformance",
    "RelativePerformanceStats",
    "WinPercentage",
    "average_drop",
    "band_mask",
    "cam_dead_zone_mass",
    "cam_explain",
    "class_scores",
    "compute_cams",
    "dead_zone_mass",
    "evaluate_methods",
    "explanation_maps",
    "increase_in_confidence",
    "register",
    "relative_performance",
    "win_percentage",
]
