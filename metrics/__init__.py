"""The metrics of the Grad-CAM++ and Grad-CAM+ papers, exactly as defined, for Quantus.

- :mod:`metrics.functional`: the formulas on tensors (average drop, increase in confidence,
  win %, relative performance, dead-zone mass) and their paired bootstrap intervals
  (:mod:`metrics.intervals`); :mod:`metrics.digits` prints values to the digits their intervals
  support.
- :mod:`metrics.perturbation`: deletion and insertion AUC (Petsiuk et al. 2018,
  arXiv:1806.07421) and ROAD (Rong et al. 2022, arXiv:2202.00449), batched over maps and images.
- Quantus metrics :class:`AverageDrop`, :class:`IncreaseInConfidence`, :class:`WinPercentage`,
  :class:`RelativePerformance`, :class:`DeadZoneMass` (:mod:`metrics.quantus_metrics`). They
  are imported at first use, ``metrics.AverageDrop`` or ``import metrics.quantus_metrics``,
  which also lists them in ``quantus.available_metrics()`` under "Faithfulness"; until then
  nothing here imports Quantus.
- :func:`cam_explain`: a Quantus ``explain_func`` for the ``captum_camplus`` methods.
- :func:`evaluate_methods`: every metric for several methods over a data set, one CAM pass per
  batch, with Lerma & Lucas' relative-performance tables; works under ``torch.distributed``.
  :class:`BatchScorer` is its per-batch step, for callers that stream results.

The formulas, the explanation maps and the driver need only the core (torch, captum, numpy);
the Quantus metrics need the ``metrics`` extra. The package is also importable as
``captum_camplus.metrics``, a name no module of a user's project can shadow.

References:
- Chattopadhay, Sarkar, Howlader & Balasubramanian (2018), "Grad-CAM++: Generalized
  Gradient-based Visual Explanations for Deep Convolutional Networks", WACV 2018,
  arXiv:1710.11063 (average drop, increase in confidence, win %).
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838 (Grad-CAM+, relative performance).
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD
  2024, arXiv:2404.01964 (dead-zone mass).
"""

from importlib import import_module
from importlib.util import find_spec
from typing import TYPE_CHECKING

from .confidence import cam_dead_zone_mass, class_scores, explanation_maps
from .driver import evaluate_methods
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
from .perturbation import deletion_auc, insertion_auc, road_curve
from .result import EvaluationResult
from .sanity import cascading_randomisation
from .scoring import BatchScorer, BatchScores

if TYPE_CHECKING:  # what a type checker sees of the names that load at first use
    from .quantus_adapter import CamMetric as CamMetric
    from .quantus_metrics import QUANTUS_METRICS as QUANTUS_METRICS
    from .quantus_metrics import AverageDrop as AverageDrop
    from .quantus_metrics import DeadZoneMass as DeadZoneMass
    from .quantus_metrics import DeletionAUC as DeletionAUC
    from .quantus_metrics import IncreaseInConfidence as IncreaseInConfidence
    from .quantus_metrics import InsertionAUC as InsertionAUC
    from .quantus_metrics import RelativePerformance as RelativePerformance
    from .quantus_metrics import RoadLeastRelevantFirst as RoadLeastRelevantFirst
    from .quantus_metrics import RoadMostRelevantFirst as RoadMostRelevantFirst
    from .quantus_metrics import WinPercentage as WinPercentage
    from .quantus_registry import register_quantus_metrics as register_quantus_metrics

#: The names that need Quantus, by module. They are imported by :func:`__getattr__` at first use,
#: not here: Quantus is an optional extra, slow to import, and importing
#: :mod:`metrics.quantus_metrics` changes Quantus' global registry.
_QUANTUS_NAMES = {
    "QUANTUS_METRICS": "quantus_metrics",
    "AverageDrop": "quantus_metrics",
    "DeadZoneMass": "quantus_metrics",
    "DeletionAUC": "quantus_metrics",
    "InsertionAUC": "quantus_metrics",
    "RoadLeastRelevantFirst": "quantus_metrics",
    "RoadMostRelevantFirst": "quantus_metrics",
    "IncreaseInConfidence": "quantus_metrics",
    "RelativePerformance": "quantus_metrics",
    "WinPercentage": "quantus_metrics",
    "CamMetric": "quantus_adapter",
    "register_quantus_metrics": "quantus_registry",
}


def __getattr__(name: str) -> object:
    module = _QUANTUS_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        value = getattr(import_module(f".{module}", __name__), name)
    except ImportError as error:
        if (error.name or "").partition(".")[0] != "quantus":
            raise
        raise ImportError(
            f"metrics.{name} needs Quantus, which is not installed (or cannot be imported): "
            'pip install "captum-camplus[metrics]"'
        ) from error
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_QUANTUS_NAMES})


__all__ = [
    "MAPS_FROM",
    "BatchScorer",
    "BatchScores",
    "EvaluationResult",
    "PairComparison",
    "RelativePerformanceIntervals",
    "RelativePerformanceStats",
    "ScoreIntervals",
    "average_drop",
    "cam_dead_zone_mass",
    "cam_explain",
    "cascading_randomisation",
    "class_scores",
    "compare_pair",
    "compute_cams",
    "dead_zone_mass",
    "deletion_auc",
    "evaluate_methods",
    "explanation_maps",
    "increase_in_confidence",
    "insertion_auc",
    "relative_performance",
    "relative_performance_intervals",
    "road_curve",
    "score_intervals",
    "sign_test",
    "win_percentage",
]

# ``from metrics import *`` gives the Quantus names only where Quantus can be imported (found on
# the path, not imported here), so that it works without the extra.
if find_spec("quantus") is not None:
    __all__ += list(_QUANTUS_NAMES)
