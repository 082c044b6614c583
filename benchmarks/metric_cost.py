"""Metric cost: the ways of scoring maps with the papers' metrics (ours in one pass, ours inside
Quantus, pytorch-grad-cam's), and the forward passes each makes per image.

Quantus and pytorch-grad-cam are imported when their evaluation is made, so a missing one
becomes a note in the report instead of a failure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from benchmarks.cases import Case
from metrics import evaluate_methods


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


def metric_evaluations() -> tuple[list[MetricEvaluation], list[str]]:
    """Every way of scoring that is installed, and a note for each that is not."""
    found, missing = [], []
    for library, make in METRIC_EVALUATIONS.items():
        try:
            found.extend(make())
        except ImportError as error:
            missing.append(f"metric cost: {library} not installed ({error.name})")
    return found, missing


def forwards_per_image(run: Callable[[Case], object], case: Case) -> float:
    """Images the model is run on during one call, per image of the batch."""
    seen = 0

    def count(module: nn.Module, args: tuple) -> None:
        nonlocal seen
        seen += args[0].shape[0]

    handle = case.model.register_forward_pre_hook(count)
    try:
        run(case)
    finally:
        handle.remove()
    return seen / len(case.inputs)


__all__ = ["METRIC_EVALUATIONS", "MetricEvaluation", "forwards_per_image", "metric_evaluations"]
