"""The Quantus plumbing shared by every metric of this package, written once.

A metric subclasses :class:`CamMetric` and states its name, score direction and formula
(:meth:`CamMetric.score`, on a :class:`MetricBatch` of tensors on the model's device). The base
class gives it Quantus' constructor and call arguments with defaults, so it works both when
called directly and inside ``quantus.evaluate``, which passes only the model, the data,
``a_batch``, ``s_batch`` and the explain function with its keyword arguments.

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import quantus
import torch
from quantus.helpers.enums import DataType, EvaluationCategory, ModelType
from quantus.helpers.model.model_interface import ModelInterface
from torch import Tensor, nn

from captum_camplus import upsample_and_normalize
from captum_camplus.utils import evaluation_mode, module_device

from .confidence import (
    Preprocess,
    ScoreKind,
    Scores,
    as_target,
    class_scores,
    describe_scores,
    explanation_maps,
    keep_mask,
    model_forward,
    model_score_kind,
    score_kind,
)
from .guards import as_model_input
from .result import undefined_metrics

#: A Quantus explain function: ``(model, inputs, targets, **kwargs) -> np.ndarray``.
ExplainFunc = Callable[..., np.ndarray]
#: Another method to compare with: its name (explained by the metric's ``explain_func`` with
#: ``method=name``, as ``quantus.evaluate`` does) or an explain function of its own.
Rival = str | ExplainFunc


@dataclasses.dataclass
class MetricBatch:
    """One batch of a Quantus call as tensors on the model's device; scores computed on demand."""

    model: nn.Module  #: the raw model, for explain functions
    forward: Callable[[Tensor], Tensor]  #: ``model(preprocess(x))``
    x: Tensor  #: the inputs ``I``
    target: Tensor  #: the explained class per image
    maps: Tensor  #: the attributions ``a_batch`` being scored
    region: Tensor | None  #: ``s_batch != 0`` per image, or None
    scores: ScoreKind  #: how the model's outputs become ``Y`` and ``O``
    inputs: np.ndarray  #: ``x`` as Quantus passed it, for explain functions
    targets: np.ndarray  #: the targets as Quantus passed them
    _y: Scores | None = None
    _o: Scores | None = None

    @property
    def y(self) -> Scores:
        """``Y``: the scores on the inputs (one forward, at first use)."""
        if self._y is None:
            self._y = class_scores(self.forward, self.x, self.target, self.scores)
        return self._y

    @property
    def o(self) -> Scores:
        """``O``: the scores on the explanation maps of ``maps`` (one forward, at first use)."""
        if self._o is None:
            self._o = self.scores_of(self.maps)
        return self._o

    def scores_of(self, maps: Tensor) -> Scores:
        """Scores on the explanation maps ``E = L (.) I`` of other ``maps`` of these images."""
        if maps.dim() == self.x.dim() - 1:  # (N, *spatial) without the channel
            maps = maps.unsqueeze(1)
        return class_scores(self.forward, explanation_maps(maps, self.x), self.target, self.scores)

    def select(self, keep: Tensor) -> MetricBatch:
        """The images where ``keep`` is True."""
        host = keep.cpu().numpy()
        return dataclasses.replace(
            self,
            x=self.x[keep],
            target=self.target[keep],
            maps=self.maps[keep],
            region=None if self.region is None else self.region[keep],
            inputs=self.inputs[host],
            targets=self.targets[host] if self.targets.ndim else self.targets,
            _y=Scores(*(t[keep] for t in self.y)),
            _o=None,
        )


def input_sized(
    a_batch: np.ndarray | None, x_batch: np.ndarray, channel_first: bool | None
) -> np.ndarray | None:
    """``a_batch`` of any resolution as channel-first, input-sized maps, before Quantus checks it.

    One-channel maps, ``(N, 1, h, w)`` or ``(N, h, w)`` (``(N, h, w, 1)`` for channel-last
    inputs, which Quantus turns channel-first but leaves the maps as given), come back as
    ``(N, 1, H, W)``, upsampled and min-max normalised per image if their size differs, as the
    metrics do anyway; anything else is passed on as given, for Quantus to check.
    """
    if a_batch is None:
        return None
    x_shape = np.shape(x_batch)
    if len(x_shape) < 3:
        return a_batch
    if channel_first is None:
        channel_first = quantus.helpers.utils.infer_channel_first(np.asarray(x_batch))
    spatial = x_shape[2:] if channel_first else x_shape[1:-1]
    maps = np.asarray(a_batch)
    if maps.ndim == len(x_shape) - 1:
        maps = maps[:, None]
    elif not channel_first and maps.ndim == len(x_shape) and maps.shape[-1] == 1:
        maps = np.moveaxis(maps, -1, 1)
    if maps.ndim != len(x_shape) or maps.shape[1] != 1 or maps.shape[0] != x_shape[0]:
        return a_batch
    if maps.shape[2:] == spatial:
        return maps
    return upsample_and_normalize(torch.as_tensor(maps), spatial).numpy()


class CamMetric(quantus.Metric):
    """Base class of the metrics of the Grad-CAM++ and Grad-CAM+ papers as Quantus metrics.

    Attributions are upsampled to the input and min-max normalised per image here, so Quantus'
    own ``normalise`` (by the batch maximum) is off. ``a_batch`` may hold ``(N, 1, h, w)`` or
    ``(N, h, w)`` maps of any resolution for channel-first inputs; Quantus refuses an
    ``a_batch`` that is all zero or all one value as a whole, before this code runs (one
    all-zero map in a batch is fine and gives ``E = 0``). An ``explain_func`` returns maps of
    the input's size, as :func:`metrics.cam_explain` does.

    The model is never changed: one in training mode is evaluated in eval mode and its modes are
    restored; inputs are cast to its dtype (:mod:`metrics.guards`).

    Args:
        preprocess: If given, ``x_batch`` holds images in [0, 1] and the model sees
            ``preprocess(x)``; the explanation map ``E = L (.) I`` is then taken on the image.
        threshold: Keep only images whose score ``Y`` exceeds it (Lerma & Lucas use softmax >
            0.5). The others get a NaN score that the default aggregation skips; a call in which
            no image passes raises ``ValueError``.
        return_aggregate: Return the dataset value (default) rather than per-image scores.
        aggregate_func: Replaces the default aggregation (see :meth:`aggregate`).
        scores: How ``Y`` and ``O`` are scored, the one setting of it. ``None`` (default): the
            kind the called model states (a wrapper of :mod:`captum_camplus.targets`:
            ``"probabilities"`` or ``"cosine"``, taken as they are), else ``"softmax"``
            (:func:`metrics.confidence.model_score_kind`); ``"softmax"`` (the papers')
            probabilities, computed in float64; ``"sigmoid"`` (binary ``(N, 1)`` and
            multi-label models: each label's sigmoid probability); ``"raw"`` outputs
            (:func:`metrics.confidence.class_scores`). A binary model's one output is never put
            through a softmax (the call raises an error naming the choice). A metric that the
            scores leave undefined (:func:`metrics.result.undefined_metrics`: average drop and
            relative performance of raw outputs or cosine similarities) is refused before
            anything runs: at construction for a given ``scores``, at the call for a stated one.
        disable_warnings, display_progressbar, kwargs: Passed to ``quantus.Metric``.

    Call with Quantus' arguments. Quantus' own ``softmax`` keyword (``quantus.evaluate`` passes
    it when it is in ``call_kwargs``) does not choose the scores; it states them, and must agree
    with ``scores``: ``softmax=True`` means ``scores="softmax"``, ``softmax=False`` means
    ``"raw"`` or ``"sigmoid"``, and ``None`` (default) leaves ``scores`` to decide. A call that
    contradicts ``scores`` raises ``ValueError``; a call never changes the metric.

    ``return_aggregate=True`` by default, as Quantus' ``FaithfulnessCorrelation`` (not
    ``PixelFlipping``): a call returns ``[dataset value]``.
    """

    data_applicability: ClassVar[set[DataType]] = {DataType.IMAGE}
    model_applicability: ClassVar[set[ModelType]] = {ModelType.TORCH}
    evaluation_category: ClassVar[EvaluationCategory] = EvaluationCategory.FAITHFULNESS
    #: The metric's name in :func:`metrics.result.undefined_metrics`, if some scores leave it
    #: undefined.
    defined_by: ClassVar[str | None] = None

    @staticmethod
    def aggregate(scores: Sequence[float]) -> float:
        """Default aggregation of the per-image scores: their mean, skipping thresholded images
        (NaN)."""
        return float(np.nanmean(scores))

    def __init__(
        self,
        *,
        preprocess: Preprocess | None = None,
        threshold: float | None = None,
        return_aggregate: bool = True,
        aggregate_func: Callable[[Sequence[float]], Any] | None = None,
        disable_warnings: bool = True,
        display_progressbar: bool = False,
        scores: ScoreKind | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            abs=False,
            normalise=False,
            normalise_func=None,
            normalise_func_kwargs=None,
            return_aggregate=return_aggregate,
            aggregate_func=aggregate_func or type(self).aggregate,
            default_plot_func=None,
            disable_warnings=disable_warnings,
            display_progressbar=display_progressbar,
            **kwargs,
        )
        self.preprocess = preprocess
        self.threshold = threshold
        #: The ``scores=`` given (``None``: as the called model states, else softmax).
        self.scores: ScoreKind | None = None if scores is None else score_kind(scores)
        if self.scores is not None:
            self._check_defined(self.scores)

    def _check_defined(self, scores: ScoreKind) -> None:
        """Refuse scores that leave this metric undefined, with the reason."""
        why = undefined_metrics(scores).get(self.defined_by or "")
        if why is not None:
            raise ValueError(
                f"{self.name} is undefined for {describe_scores(scores)} (scores={scores!r}): "
                f"{why}; increase in confidence and win percentage are defined for them"
            )

    def scores_for(self, model: nn.Module | ModelInterface) -> ScoreKind:
        """The kind of scores of a call on ``model`` (:func:`metrics.confidence.model_score_kind`
        of the metric's ``scores``), refused if it leaves the metric undefined."""
        raw = model.get_model() if isinstance(model, ModelInterface) else model
        kind = model_score_kind(raw, self.scores)
        self._check_defined(kind)
        return kind

    def __call__(
        self,
        model: nn.Module,
        x_batch: np.ndarray,
        y_batch: np.ndarray,
        a_batch: np.ndarray | None = None,
        s_batch: np.ndarray | None = None,
        channel_first: bool | None = None,
        explain_func: ExplainFunc | None = None,
        explain_func_kwargs: dict[str, Any] | None = None,
        model_predict_kwargs: dict[str, Any] | None = None,
        softmax: bool | None = None,
        device: str | None = None,
        batch_size: int = 64,
        custom_batch: Any = None,
        **kwargs: Any,
    ) -> list[float]:
        """Score ``a_batch`` (or the maps of ``explain_func``) of ``model`` on the data.

        ``softmax`` must agree with the metric's ``scores`` (see :class:`CamMetric`).
        """
        scores = self.scores_for(model)
        self._check_softmax(softmax, scores)
        if len(x_batch) == 0:  # Quantus would call the empty a_batch "all zero"
            raise ValueError(f"{self.name}: x_batch is empty, there is nothing to score")
        with evaluation_mode(model):
            return super().__call__(
                model=model,
                x_batch=x_batch,
                y_batch=y_batch,
                a_batch=input_sized(a_batch, x_batch, channel_first),
                s_batch=s_batch,
                channel_first=channel_first,
                explain_func=explain_func,
                explain_func_kwargs=explain_func_kwargs,
                model_predict_kwargs=model_predict_kwargs,
                softmax=scores == "softmax",
                device=device,
                batch_size=batch_size,
                custom_batch=custom_batch,
                **kwargs,
            )

    def _check_softmax(self, softmax: bool | None, scores: ScoreKind) -> None:
        """Raise unless Quantus' ``softmax`` flag of a call agrees with the call's ``scores``."""
        if softmax is None or softmax == (scores == "softmax"):
            return
        if not isinstance(softmax, bool):
            raise TypeError(f"softmax must be True, False or None, got {softmax!r}")
        wanted = "'softmax'" if softmax else "'raw' or 'sigmoid'"
        raise ValueError(
            f"{self.name} scores {scores!r} but was called with softmax={softmax}: the "
            f"metric's scores= decides how Y and O are scored; build it with scores={wanted} "
            "(or leave softmax out of the call)"
        )

    def score(self, batch: MetricBatch) -> Tensor:
        """The metric's formula: one value per image of ``batch``."""
        raise NotImplementedError

    def evaluate_batch(
        self,
        model: ModelInterface | nn.Module,
        x_batch: np.ndarray,
        y_batch: np.ndarray,
        a_batch: np.ndarray,
        s_batch: np.ndarray | None = None,
        **kwargs: Any,
    ) -> list[float]:
        raw = model.get_model() if isinstance(model, ModelInterface) else model
        predict_kwargs = getattr(model, "model_predict_kwargs", None) or {}
        net = functools.partial(raw, **predict_kwargs) if predict_kwargs else raw
        device = module_device(raw)
        x = as_model_input(x_batch, raw)  # float64 arrays (Quantus' fixtures) included
        batch = MetricBatch(
            model=raw,
            forward=model_forward(net, self.preprocess),
            x=x,
            target=as_target(y_batch, x.shape[0], device=device),
            maps=torch.as_tensor(np.asarray(a_batch), device=device, dtype=x.dtype),
            region=None
            if s_batch is None
            else torch.as_tensor(np.asarray(s_batch) != 0, device=device),
            scores=self.scores_for(raw),
            inputs=np.asarray(x_batch),
            targets=np.asarray(y_batch),
        )
        if self.threshold is None:
            return self.score(batch).tolist()
        keep = keep_mask(batch.y.value, self.threshold)
        values = torch.full((x.shape[0],), float("nan"), dtype=torch.float64, device=device)
        if bool(keep.any()):
            values[keep] = self.score(batch.select(keep)).to(torch.float64)
        return values.tolist()

    def custom_postprocess(self, **kwargs: Any) -> None:
        if self.threshold is not None and np.isnan(self.evaluation_scores).all():
            raise ValueError(
                f"{self.name}: no image has a score Y above the threshold {self.threshold}, so "
                "there is nothing to score; lower the threshold or pass threshold=None"
            )

    def is_own(self, rival: Rival) -> bool:
        """Whether ``rival`` names the method being scored (``quantus.evaluate``'s key)."""
        return isinstance(rival, str) and rival == self.explain_func_kwargs.get("method")

    def rival_scores(self, batch: MetricBatch, rival: Rival) -> Scores:
        """Scores of another method's explanation maps on the same images (one forward)."""
        if self.is_own(rival):
            return batch.o
        if isinstance(rival, str):
            if self.explain_func is None:
                raise ValueError(
                    f"{self.name} compares with the method {rival!r}, which needs explain_func "
                    "(e.g. metrics.cam_explain with explain_func_kwargs={'layer': ...})"
                )
            explain, kwargs = self.explain_func, {**self.explain_func_kwargs, "method": rival}
        elif callable(rival):
            explain, kwargs = rival, {}
        else:
            raise TypeError(f"a method to compare with is a name or an explain function: {rival!r}")
        maps = explain(model=batch.model, inputs=batch.inputs, targets=batch.targets, **kwargs)
        maps = torch.as_tensor(np.asarray(maps), device=batch.x.device, dtype=batch.x.dtype)
        return batch.scores_of(maps)


__all__ = ["CamMetric", "ExplainFunc", "MetricBatch", "Rival"]
