"""Score several CAM methods on a data set with every metric (Lerma & Lucas, section 4): the
batches of :class:`~metrics.scoring.BatchScorer` over the data (this process's shard under
``torch.distributed``), as records (:mod:`metrics.records`) gathered from every process into
one :class:`~metrics.result.EvaluationResult`.

>>> result = evaluate_methods(model, model.layer4, images, labels=labels, threshold=0.5)
>>> print(result)                     # aggregates and the relative-performance table
>>> result.summary()                  # the same as rows (dicts), e.g. for csv.DictWriter
>>> scorer = BatchScorer(model, model.layer4, threshold=0.5)  # one batch at a time, to stream
>>> batch = scorer(x, labels, index)  # per-image Y, O, log O of every method
>>> records = image_records(batch)    # one JSON-ready record per image
>>> result = evaluation_result(records, scorer.names, scorer.maps_from, scores=scorer.scores)

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_camplus import LayoutSpec
from captum_camplus.utils import MethodFactory

from .confidence import Preprocess, ScoreKind
from .distributed import concatenate_records, gather, rank_and_world, shard
from .heatmaps import MapsFrom
from .records import evaluation_result, image_records
from .result import EvaluationResult
from .scoring import BatchScorer, LayerCallback


def evaluate_methods(
    model: nn.Module,
    layer: nn.Module | str,
    data: Tensor | Iterable[Any],
    methods: Sequence[str] | Mapping[str, MethodFactory] | None = None,
    *,
    labels: Tensor | None = None,
    maps_from: Sequence[MapsFrom] | None = None,
    scores: ScoreKind | None = None,
    threshold: float | None = None,
    preprocess: Preprocess | None = None,
    unseen: Tensor | None = None,
    batch_size: int = 32,
    progress: bool = True,
    on_layer: LayerCallback | None = None,
    layout: LayoutSpec = None,
) -> EvaluationResult:
    """Score every method on every image with every metric.

    Args:
        model: The classifier, returning ``(N, classes)`` logits, or a wrapper of
            :mod:`captum_camplus.targets` returning ``(N, K)`` scores (a segmentation model's
            region probabilities, a detector's box scores, cosine similarities). One in
            training mode is evaluated in eval mode and left as it was (:mod:`metrics.guards`).
        layer: Its CAM layer (module or name).
        data: Images ``(N, C, H, W)``, or an iterable (DataLoader) of batches ``x`` or
            ``(x, labels, ...)``. Under ``torch.distributed`` a tensor is split across the
            ranks here; an iterable must already be this rank's shard (a DistributedSampler
            without padding, or a manual split).
        methods: Names of registered methods (:data:`captum_camplus.METHODS`; default:
            :data:`captum_camplus.DEFAULT_METHODS`, the built-ins in the order of Lerma & Lucas
            plus HiResCAM; ``"all"``: every registered method) or a mapping name -> class/factory.
        labels: The class to explain per image for tensor ``data``; default the predicted one.
        maps_from: Maps from gradients of the logits, of the softmax, or both (Lerma & Lucas,
            tables 1-2); ``None`` (default): both, or only ``"pre-softmax"`` (the gradients of
            the scores themselves) for outputs that are scores already
            (:func:`metrics.heatmaps.maps_from_for`).
        scores: How ``Y`` and ``O`` are scored. ``None`` (default): the kind the model states
            (``"probabilities"`` for ``SegmentationScores`` and ``DetectionScores``,
            ``"cosine"`` for ``SimilarityScores``, taken as they are; average drop and relative
            performance are n/a for cosines), else ``"softmax"``
            (:func:`metrics.confidence.model_score_kind`). ``"softmax"`` probabilities (the
            papers'), ``"sigmoid"`` (binary ``(N, 1)`` and multi-label models: each label's
            sigmoid probability; post-softmax maps then differentiate it) or ``"raw"`` outputs
            (:func:`metrics.confidence.class_scores`). A binary model's one output is never put
            through a softmax: the default raises an error naming the choice.
        threshold: Keep only images whose score ``Y`` exceeds it (Lerma & Lucas use 0.5 on
            softmax).
        preprocess: If given, ``data`` holds images in [0, 1] and the model sees
            ``preprocess(x)``; ``E = L (.) I`` is taken on the image.
        unseen: Boolean ``(H, W)`` mask of a region the model cannot see, for the dead-zone mass.
        batch_size: For tensor ``data``.
        progress: Show a progress bar (on rank 0).
        on_layer: Called per batch and kind of map with ``(maps_from, index, A, g)`` of the
            images that passed the threshold, on the layer's grid ``(N, C, *grid)``, e.g. to
            collect the Grad-CAM++ alphas of Lerma & Lucas, figures 3-4, with
            :meth:`captum_camplus.LayerGradCamPlusPlus.alphas`.
        layout: The layer's layout (``"tokens"`` for a ViT, ``"channels_last"`` for a Swin
            stage), as :class:`captum_camplus.CamAttribution` takes it; read against each
            batch's images (:mod:`captum_camplus.layouts`).

    Raises:
        ValueError: if no image passes the threshold, and for bad arguments.
    """
    scorer = BatchScorer(
        model,
        layer,
        methods,
        maps_from=maps_from,
        scores=scores,
        threshold=threshold,
        preprocess=preprocess,
        unseen=unseen,
        on_layer=on_layer,
        layout=layout,
    )
    rank, world = rank_and_world()
    batches, total = shard(data, labels, batch_size, rank, world)
    records = [
        record
        for x, batch_labels, index in tqdm(
            batches, total=total, desc="scoring", unit="batch", disable=not progress or rank != 0
        )
        for record in image_records(scorer(x, batch_labels, index))
    ]
    # a tensor is split here by global positions; a loader's batches are numbered per process
    records = concatenate_records(gather(records, world), not isinstance(data, Tensor))
    return evaluation_result(
        records, scorer.names, scorer.maps_from, scores=scorer.scores, threshold=threshold
    )


__all__ = ["evaluate_methods"]
