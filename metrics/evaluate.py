"""Score several CAM methods on a data set with every metric (Lerma & Lucas, section 4).

Per batch (:class:`BatchScorer`): one forward that gives ``Y`` and keeps the layer's output,
one backward to the layer per kind of map (gradients of the logits and of the softmax, the two
columns of Lerma & Lucas, tables 1-2, both from that forward) that gives every method's map, and
one forward per method and kind of map for the scores ``O`` of its explanation maps: per image,
1 forward, 2 backwards to the layer and 2M forwards for M methods. Under ``torch.distributed``
each rank scores its shard and every rank gets all results.

>>> result = evaluate_methods(model, model.layer4, images, labels=labels, threshold=0.5)
>>> print(result)                     # aggregates and the relative-performance table
>>> result.summary()                  # the same as rows (dicts), e.g. for csv.DictWriter
>>> scorer = BatchScorer(model, model.layer, threshold=0.5)   # one batch at a time, to stream
>>> batch = scorer(x, labels, index)  # per-image Y, O, log O of every method
>>> records = image_records(batch)    # one JSON-ready record per image
>>> result = evaluation_result(records, scorer.names, scorer.maps_from)

The pieces, one job per module (this module re-exports them): :mod:`metrics.scoring` (one
batch), :mod:`metrics.records` (per-batch scores -> records -> result, the one change of shape),
:mod:`metrics.result` (:class:`EvaluationResult`), :mod:`metrics.driver`
(:func:`evaluate_methods`), :mod:`metrics.distributed` (rank, shard, the one gather) and
:mod:`metrics.tables` (:func:`format_table`).

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
"""

from .driver import evaluate_methods
from .records import evaluation_result, image_records
from .result import EvaluationResult, PerMethod
from .scoring import BatchScorer, BatchScores, LayerCallback
from .tables import format_table

__all__ = [
    "BatchScorer",
    "BatchScores",
    "EvaluationResult",
    "LayerCallback",
    "PerMethod",
    "evaluate_methods",
    "evaluation_result",
    "format_table",
    "image_records",
]
