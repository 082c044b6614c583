"""Metric cost: the ways of scoring maps with the papers' metrics (ours in one pass, ours inside
Quantus, pytorch-grad-cam's), ours with every metric (deletion and insertion AUC, ROAD, the
cascading randomisation check), ``camplus compare``'s batch step with ``--metrics
randomisation`` and ``--metrics all``, and the forward passes each makes per image and per
batch.

Quantus and pytorch-grad-cam are imported when their evaluation is made, so a missing one
becomes a note in the report instead of a failure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from benchmarks.cases import Case
from captum_camplus import upsample_and_normalize
from metrics import BatchScorer, cascading_randomisation, compute_cams, evaluate_methods
from metrics.choices import parse_metrics
from metrics.perturbation import deletion_auc, insertion_auc, road_curve
from metrics.records import evaluation_result, image_records

#: Steps of deletion and insertion in the cost rows (RISE's code: one step per 224 pixels).
STEPS = 100
#: Layers randomised by the cost row of the sanity check (from the top).
DEPTH = 3


@dataclass
class MetricEvaluation:
    """A way to score maps with the papers' metrics; ``run`` computes the maps and scores them."""

    name: str
    scores: str  #: what one call delivers
    run: Callable[[Case], object]


def _evaluate_methods() -> MetricEvaluation:
    def run(case: Case) -> object:
        result = evaluate_methods(
            case.model,
            case.layer,
            case.inputs,
            labels=case.target,
            maps_from=["pre-softmax"],
            batch_size=len(case.inputs),
            progress=False,
            layout=case.layout,
        )
        return result.summary(), result.relative_performance()

    scores = "4 methods x (average drop, increase in confidence, win %, relative performance)"
    return MetricEvaluation("metrics.evaluate_methods", scores, run)


def _papers_and_perturbations() -> MetricEvaluation:
    papers = _evaluate_methods()

    def run(case: Case) -> object:
        cams = compute_cams(case.model, case.layer, case.inputs, case.target, layout=case.layout)
        size = case.inputs.shape[2:]
        maps = torch.stack([upsample_and_normalize(cam, size) for cam in cams.values()])
        kwargs = {"forward": case.model, "inputs": case.inputs, "maps": maps}
        return (
            papers.run(case),
            deletion_auc(**kwargs, target=case.target, steps=STEPS),
            insertion_auc(**kwargs, target=case.target, steps=STEPS),
            road_curve(**kwargs, target=case.target, order="most"),
            road_curve(**kwargs, target=case.target, order="least"),
        )

    scores = f"the papers' metrics + deletion, insertion ({STEPS} steps), ROAD MoRF + LeRF"
    return MetricEvaluation("metrics, papers' + perturbations", scores, run)


def _randomisation() -> MetricEvaluation:
    def run(case: Case) -> object:
        return cascading_randomisation(
            case.model, case.layer, case.inputs, case.target, depth=DEPTH, layout=case.layout
        )

    scores = f"4 methods x rank correlation after randomising the top {DEPTH} layers"
    return MetricEvaluation("metrics.cascading_randomisation", scores, run)


def _compare_step(choice: str) -> MetricEvaluation:
    """``camplus compare --metrics <choice>``'s step (:class:`metrics.BatchScorer`, pre-softmax
    maps as the other rows), then its tables' values, as ``metrics.evaluate_methods``. The
    scorer is made at the first call on a case and kept, as ``compare`` makes it once per
    process: the randomised copy of the model (made at its first batch) is not in the time of
    the later calls."""
    chosen = parse_metrics(choice)
    scorers: dict[int, tuple[Case, BatchScorer]] = {}

    def run(case: Case) -> object:
        if id(case) not in scorers:
            scorer = BatchScorer(
                case.model,
                case.layer,
                maps_from=["pre-softmax"],
                layout=case.layout,
                metrics=chosen,
            )
            scorers[id(case)] = case, scorer  # the case kept alive: its id stays its own
        scorer = scorers[id(case)][1]
        records = image_records(scorer(case.inputs, case.target))
        result = evaluation_result(records, scorer.names, ["pre-softmax"], metrics=chosen)
        return result.summary(), result.relative_performance()

    scores = f"the papers' metrics + {', '.join(chosen[1:])}"
    return MetricEvaluation(f"compare step, --metrics {choice}", scores, run)


def _quantus_average_drop() -> MetricEvaluation:
    from metrics import AverageDrop, cam_explain

    def run(case: Case) -> object:
        return AverageDrop()(
            model=case.model,
            x_batch=case.inputs.cpu().numpy(),
            y_batch=case.target.cpu().numpy(),
            explain_func=cam_explain,
            explain_func_kwargs={
                "method": "Grad-CAM++",
                "layer": case.layer,
                "layout": case.layout,
            },
            batch_size=len(case.inputs),
        )

    return MetricEvaluation("metrics.AverageDrop in Quantus", "1 method x average drop", run)


def _pytorch_grad_cam_drop() -> MetricEvaluation:
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def run(case: Case) -> object:
        targets = [ClassifierOutputTarget(int(t)) for t in case.target.tolist()]
        with GradCAMPlusPlus(
            model=case.model, target_layers=[case.layer], reshape_transform=case.reshape_transform
        ) as cam:
            heatmaps = cam(input_tensor=case.inputs, targets=targets)
        return DropInConfidence()(case.inputs, heatmaps, targets, case.model)

    return MetricEvaluation(
        "pytorch-grad-cam DropInConfidence", "1 method x absolute logit drop", run
    )


METRIC_EVALUATIONS: dict[str, Callable[[], list[MetricEvaluation]]] = {
    "metrics": lambda: [_evaluate_methods(), _quantus_average_drop()],
    "pytorch-grad-cam": lambda: [_pytorch_grad_cam_drop()],
}


def every_metric() -> list[MetricEvaluation]:
    """Ours with the papers' metrics alone, then with every metric (``benchmarks.metric_ratios``;
    not in ``benchmarks.run``, where the perturbations would dominate the run's time)."""
    return [
        _evaluate_methods(),
        _papers_and_perturbations(),
        _randomisation(),
        _compare_step("randomisation"),
        _compare_step("all"),
    ]


def metric_evaluations() -> tuple[list[MetricEvaluation], list[str]]:
    """Every way of scoring that is installed, and a note for each that is not."""
    found, missing = [], []
    for library, make in METRIC_EVALUATIONS.items():
        try:
            found.extend(make())
        except ImportError as error:
            missing.append(f"metric cost: {library} not installed ({error.name})")
    return found, missing


def model_calls(run: Callable[[Case], object], case: Case) -> tuple[int, int]:
    """The model's calls during one call of ``run`` (passes per batch) and the images they
    took in all."""
    calls = seen = 0

    def count(module: nn.Module, args: tuple) -> None:
        nonlocal calls, seen
        calls += 1
        seen += args[0].shape[0]

    handle = case.model.register_forward_pre_hook(count)
    try:
        run(case)
    finally:
        handle.remove()
    return calls, seen


def forwards_per_image(run: Callable[[Case], object], case: Case) -> float:
    """Images the model is run on during one call, per image of the batch."""
    return model_calls(run, case)[1] / len(case.inputs)


__all__ = [
    "DEPTH",
    "METRIC_EVALUATIONS",
    "STEPS",
    "MetricEvaluation",
    "every_metric",
    "forwards_per_image",
    "metric_evaluations",
    "model_calls",
]
