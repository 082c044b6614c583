"""Cost of a CAM through each wrapper of :mod:`captum_camplus.targets` against its floor.

Run from the repository root (torchvision comes with the ``bench`` extra)::

    python -m benchmarks.wrappers --rounds 15 --threads 1
    python -m benchmarks.wrappers --device cuda --json out.json

For each wrapper around a torchvision model with random weights (an LR-ASPP segmentation model
in :class:`~captum_camplus.targets.SegmentationScores`, a Faster R-CNN in
:class:`~captum_camplus.targets.DetectionScores`, a ResNet-18 encoder in
:class:`~captum_camplus.targets.SimilarityScores`, a ResNet-18 returning a dict in
:class:`~captum_camplus.targets.OutputSelect`), the same batch, targets and layer are explained
by the floor (one forward through the wrapper and ``autograd.grad`` of the summed target scores
to the layer), our Grad-CAM, all four methods from one pass (:class:`captum_camplus.LayerCams`)
and Captum's ``LayerGradCam``, timed in interleaved rounds as :mod:`benchmarks.run` times them.
Per contender: the median, its interquartile range, its ratio to the floor's median of the same
rounds, the map arithmetic alone on the captured ``(A, g)`` (``map ms``, median of 21 calls) and
``(floor + map ms) / floor``, the added cost free of the noise of whole calls, the forwards of
the wrapped model per call (counted by a hook) and the largest deviation of its Grad-CAM from
Captum's, relative to Captum's largest value.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from benchmarks.cases import Case
from benchmarks.contenders import (
    ALL_FOUR,
    FLOOR,
    Implementation,
    layer_activation_and_gradient,
)
from benchmarks.meters import arithmetic_ms, clean_up, progress, record_times, time_rounds
from benchmarks.report import Row, fmt
from benchmarks.run import add_problem_options, check_counts
from captum_camplus import LayerCams, LayerGradCam
from captum_camplus.targets import (
    DetectionScores,
    OutputSelect,
    SegmentationScores,
    SimilarityScores,
)

CAPTUM = "Captum LayerGradCam"
OURS = "Grad-CAM"
#: The wrappers measured, by name: the model each wraps and its CAM layer.
WRAPPERS = {
    "SegmentationScores": "torchvision lraspp_mobilenet_v3_large, backbone['16']",
    "DetectionScores": "torchvision fasterrcnn_mobilenet_v3_large_320_fpn, backbone.body['13']",
    "SimilarityScores": "torchvision resnet18 (512-d embedding), layer4",
    "OutputSelect": "torchvision resnet18 returning {'logits': ...}, layer4",
}


class DictOutput(nn.Module):
    """A classifier whose output is ``{"logits": ...}`` (what a Hugging Face model gives)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"logits": self.model(x)}


def wrapper_case(name: str, batch: int, size: int, device: str, seed: int) -> Case:
    """The wrapped model (random init, eval mode), its layer, a random batch in [0, 1) and each
    image's top score (class, box or reference) as its target."""
    import torchvision
    from torchvision.models import detection, segmentation

    torch.manual_seed(seed)
    inputs = torch.rand(batch, 3, size, size)
    wrapped: nn.Module
    if name == "SegmentationScores":
        model = segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)
        wrapped, layer = SegmentationScores(model), model.backbone["16"]
    elif name == "DetectionScores":
        detector = detection.fasterrcnn_mobilenet_v3_large_320_fpn(
            weights=None, weights_backbone=None, box_score_thresh=0.0
        ).eval()
        with torch.no_grad():  # the reference box: each image's top detection
            found = detector(list(inputs))
        boxes = torch.stack([f["boxes"][:1] for f in found])
        labels = torch.stack([f["labels"][:1] for f in found])
        wrapped, layer = DetectionScores(detector, boxes, labels), detector.backbone.body["13"]
    elif name == "SimilarityScores":
        encoder = torchvision.models.resnet18(weights=None, num_classes=512)
        wrapped, layer = SimilarityScores(encoder, torch.randn(10, 512)), encoder.layer4
    elif name == "OutputSelect":
        classifier = torchvision.models.resnet18(weights=None)
        wrapped, layer = OutputSelect(DictOutput(classifier), "logits"), classifier.layer4
    else:
        raise ValueError(f"unknown wrapper {name!r}; choose from {list(WRAPPERS)}")
    wrapped = wrapped.eval().to(device)
    inputs = inputs.to(device)
    with torch.no_grad():
        target = wrapped(inputs).argmax(dim=1)
    return Case(wrapped, layer, inputs, target)


def contenders() -> list[Implementation]:
    """The floor, our Grad-CAM, all four from one pass and Captum's ``LayerGradCam``."""
    from captum.attr import LayerGradCam as CaptumLayerGradCam

    def ours(case: Case) -> Tensor:
        return LayerGradCam(case.model, case.layer).attribute(
            case.inputs, target=case.target, relu_attributions=True
        )

    def all_four(case: Case) -> dict[str, Tensor]:
        return LayerCams(case.model, case.layer).attribute(
            case.inputs, target=case.target, relu_attributions=True
        )

    def captum(case: Case) -> Tensor:
        return CaptumLayerGradCam(case.model, case.layer).attribute(
            case.inputs, target=case.target, relu_attributions=True
        )

    def our_arithmetic(case: Case, activation: Tensor, gradient: Tensor) -> Tensor:
        return LayerGradCam(case.model, case.layer).map_from_layer(activation, gradient, True)

    def all_four_arithmetic(case: Case, activation: Tensor, gradient: Tensor) -> object:
        cams = LayerCams(case.model, case.layer)
        return cams.maps_from_layer(activation, gradient, relu_attributions=True)

    return [
        Implementation(FLOOR, "-", layer_activation_and_gradient, lambda case: {}),
        Implementation(
            OURS, "captum-camplus", ours, lambda case: {OURS: ours(case)}, our_arithmetic
        ),
        Implementation(
            ALL_FOUR,
            "captum-camplus",
            all_four,
            lambda case: {OURS: all_four(case)[OURS]},
            all_four_arithmetic,
        ),
        Implementation(CAPTUM, "captum", captum, lambda case: {OURS: captum(case)}),
    ]


@dataclass
class WrapperRow(Row):
    """A contender's row for one wrapper."""

    wrapper: str = ""
    forwards: float = math.nan  #: forwards of the wrapped model per call
    deviation: float = math.nan  #: max |Grad-CAM - Captum's| / max |Captum's|
    floor_ms: float = math.nan  #: the floor's median in the same rounds

    @property
    def added_ratio(self) -> float:
        """``(floor + map ms) / floor``: the measured added cost, free of the rounds' noise."""
        return (self.floor_ms + self.map_ms) / self.floor_ms


def forwards_per_call(run: Callable[[Case], object], case: Case) -> int:
    """How many times one call runs the wrapped model."""
    calls = 0

    def count(*_: object) -> None:
        nonlocal calls
        calls += 1

    handle = case.model.register_forward_pre_hook(count)
    try:
        run(case)
    finally:
        handle.remove()
    clean_up(case)
    return calls


def measure(name: str, args: argparse.Namespace) -> list[WrapperRow]:
    """Every contender's row for one wrapper."""
    progress(f"{name}: building the case")
    case = wrapper_case(name, args.batch, args.size, args.device, args.seed)
    impls = contenders()
    rows = {impl.name: WrapperRow(impl.name, impl.library, wrapper=name) for impl in impls}
    captum = next(i for i in impls if i.name == CAPTUM).maps(case)[OURS].detach()
    scale = float(captum.abs().max())
    for impl in impls:
        rows[impl.name].forwards = forwards_per_call(impl.run, case)
        if maps := impl.maps(case):
            rows[impl.name].deviation = float((maps[OURS].detach() - captum).abs().max()) / scale
        clean_up(case)
    activation, gradient = layer_activation_and_gradient(case)
    for impl in impls:
        if impl.arithmetic is not None:
            rows[impl.name].map_ms = arithmetic_ms(impl, case, activation, gradient, repeats=21)
    del activation, gradient
    clean_up(case)
    floor_ms = record_times(rows.values(), time_rounds(impls, case, args.rounds, args.seed))
    for row in rows.values():
        row.floor_ms = floor_ms
    return list(rows.values())


def markdown(rows: Sequence[WrapperRow]) -> str:
    header = ["wrapper", "implementation", "median ms", "IQR %", "x floor", "map ms"]
    header += ["(floor + map ms) / floor", "forwards", "max dev vs Captum"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for row in rows:
        cells = [
            row.wrapper,
            row.name,
            fmt(row.median_ms, ".1f"),
            fmt(row.iqr_pct, ".0f"),
            fmt(row.ratio_to_floor, ".3f"),
            fmt(row.map_ms, ".1f"),
            fmt(row.added_ratio, ".3f"),
            fmt(row.forwards, ".0f"),
            fmt(row.deviation, ".2e"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wrappers", nargs="+", choices=list(WRAPPERS), default=list(WRAPPERS))
    add_problem_options(parser, batch=4)
    return check_counts(parser, parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> list[WrapperRow]:
    """Run the benchmark; print the table (and write JSON); return the rows."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [row for name in args.wrappers for row in measure(name, args)]
    print(markdown(rows))
    if args.json is not None:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        settings |= {"torch": torch.__version__, "models": {w: WRAPPERS[w] for w in args.wrappers}}
        payload = {"settings": settings, "rows": [asdict(row) for row in rows]}
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
    return rows


__all__ = ["WRAPPERS", "WrapperRow", "main", "markdown", "wrapper_case"]


if __name__ == "__main__":
    main()
