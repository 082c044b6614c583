"""``camplus explain`` beyond classification: a torchvision segmentation model or detector.

- Segmentation: each image gets the maps of one class, ``--class`` or by default the predicted
  region, the class (background excluded) that covers most pixels. The score explained is the
  class's mean probability over its predicted pixels (:class:`~captum_camplus.targets.
  SegmentationScores` with that mask); a class predicted nowhere is explained over the whole
  image; an image predicted all background has its background explained.
- Detection: the ``--boxes`` highest-scoring detections with a score of at least
  ``--box-threshold`` (of class ``--class`` if given) each get the maps of their score
  (:class:`~captum_camplus.targets.DetectionScores`), brought onto the image at its own size
  (:meth:`~captum_camplus.targets.DetectionScores.image_maps`) and drawn with the box, its label
  and its score. An image with no such detection is listed; a run in which no image has one
  fails (exit status 1) and leaves nothing behind.

Each image is run on its own (images differ in size), one forward and one backward for all of
its boxes together (the image repeated, one reference box per copy).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from camplus_app import figures
from camplus_app.errors import Failure, UsageError, first_line
from camplus_app.options import LAYOUT, layout_option, parse_layout, write
from camplus_app.runs import RunFolder
from camplus_app.task_models import (
    Detector,
    Segmenter,
    Task,
    check_layer,
    load_detector,
    load_segmenter,
)
from camplus_app.zoo import class_index
from captum_camplus import LayerCams
from captum_camplus.layouts import LayoutSpec
from captum_camplus.maps import upsample_and_normalize
from captum_camplus.targets import DetectionScores, SegmentationScores

if TYPE_CHECKING:
    from PIL.Image import Image

#: Detections explained per image, and the score they need, unless ``--boxes`` and
#: ``--box-threshold`` say otherwise.
DEFAULT_BOXES = 3
DEFAULT_BOX_THRESHOLD = 0.5


@dataclass
class TaskJob:
    """Validated input of ``explain`` on a segmentation model or a detector."""

    model: Segmenter | Detector
    images: dict[str, Image]
    methods: list[str]
    target: int | None
    output: Path
    progress: bool
    overwrite: bool
    boxes: int = DEFAULT_BOXES
    box_threshold: float = DEFAULT_BOX_THRESHOLD
    layout: LayoutSpec = LAYOUT  #: ``--layout``: how the CAM layer's tensor is read

    def settings(self, args: argparse.Namespace) -> dict[str, object]:
        """Every setting of the run, for its manifest."""
        model = self.model
        detection = isinstance(model, Detector)
        return {
            "images": [str(a) for a in args.images],
            "image names": list(self.images),
            "task": "detection" if detection else "segmentation",
            "model": model.name,
            "weights": None if args.weights is None else str(args.weights.resolve()),
            "layer": model.layer_name,
            "layout": layout_option(self.layout),
            "methods": self.methods,
            "target": self.target,
            "target name": None if self.target is None else model.categories[self.target],
            "boxes": self.boxes if detection else None,
            "box threshold": self.box_threshold if detection else None,
            "maps": "ReLU'd, on the image at its own size, min-max normalised per map",
            "device": str(model.device),
        }


def prepare(
    args: argparse.Namespace,
    task: Task,
    methods: list[str],
    device: torch.device,
    output: Path,
    images: dict[str, Image],
) -> TaskJob:
    """Load the model and check the options that depend on the task (:class:`UsageError`)."""
    if args.scores != "softmax":
        raise UsageError(
            f"--scores applies to classifiers: a {task} model's score is "
            + ("its mean class probability over a region" if task == "segmentation" else "its own")
        )
    detection = task == "detection"
    layout = parse_layout(args.layout)
    if not detection and (args.boxes is not None or args.box_threshold is not None):
        raise UsageError(f"--boxes and --box-threshold apply to detectors, not to {args.model}")
    try:
        load = load_detector if detection else load_segmenter
        model = load(args.model, args.weights, args.layer).to(device)
        check_layer(model)
        target = (
            None if args.target is None else class_index(args.target, model.categories, model.name)
        )
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(first_line(str(error))) from error
    if isinstance(model, Detector) and model.background and target == 0:
        raise UsageError(
            f"class 0 is the background of {model.name}, which has no boxes: pick another class"
        )
    job = TaskJob(
        model=model,
        images=images,
        methods=methods,
        target=target,
        output=output,
        progress=not args.quiet,
        overwrite=args.overwrite,
        layout=layout,
    )
    if isinstance(model, Detector):
        job.boxes = DEFAULT_BOXES if args.boxes is None else args.boxes
        job.box_threshold = (
            DEFAULT_BOX_THRESHOLD if args.box_threshold is None else args.box_threshold
        )
        model.keep_scores_from(job.box_threshold)
    return job


def run_explain(job: TaskJob, folder: RunFolder) -> None:
    """Write ``<image>.png`` per image and ``predictions.csv`` (segmentation: one row per
    image) or ``detections.csv`` (one row per box explained)."""
    if isinstance(job.model, Detector):
        _explain_detections(job, job.model, folder)
    else:
        _explain_segmentation(job, job.model, folder)


def _explain_segmentation(job: TaskJob, seg: Segmenter, folder: RunFolder) -> None:
    rows = []
    for name, image in job.images.items():
        x = seg.preprocess(image)
        with torch.no_grad():
            logits = seg.model(x)["out"]
        k, mask, region = region_of(logits, job.target, seg.categories)
        probability = float(logits.softmax(dim=1)[0, k][mask[0]].mean())
        scores = SegmentationScores(seg.model, mask=mask)
        cams = LayerCams(scores, seg.layer, job.methods, layout=job.layout)
        maps = cams.attribute(x, target=k, relu_attributions=True)
        original = seg.original(image)
        heatmaps = {m: upsample_and_normalize(v, original.shape[-2:])[0] for m, v in maps.items()}
        label = (
            f"{_class_name(seg.categories, k)} over {region}, mean probability {probability:.2f}"
        )
        figure = figures.overlay_figure(original, heatmaps, f"{name}: explaining {label}")
        folder.write_bytes(f"{name}.png", figures.figure_files(figure, ["png"])["png"])
        share = float(mask.float().mean())
        rows.append(
            {
                "image": name,
                "class_index": k,
                "class_name": seg.categories[k],
                "region": region,
                "region_share": f"{share:.6f}",
                "mean_probability": f"{probability:.6f}",
            }
        )
        if job.progress:
            write(f"{name}: {label}")
    folder.write_csv("predictions.csv", rows)


def _class_name(categories: list[str], index: int) -> str:
    """``"dog (class 12)"``; a generic name ``"class 2"`` as it is."""
    name = categories[index]
    return name if name == f"class {index}" else f"{name} (class {index})"


def region_of(logits: Tensor, target: int | None, categories: list[str]) -> tuple[int, Tensor, str]:
    """The class to explain in one image's ``(1, K, h, w)`` logits, its ``(1, h, w)`` mask and
    what the mask is.

    ``target`` or, when ``None``, the class other than the background (class 0) predicted on
    most pixels (ties: the lowest index), the background itself when nothing else is
    predicted. The mask is the class's predicted pixels, or the whole image where there are
    none.
    """
    predicted = logits.argmax(dim=1)
    if target is None:
        counts = torch.bincount(predicted.flatten(), minlength=logits.shape[1])
        counts[0] = 0
        target = int(counts.argmax()) if bool(counts.any()) else 0
    mask = predicted == target
    if bool(mask.any()):
        return target, mask, "its predicted pixels"
    return (
        target,
        torch.ones_like(mask),
        f"the whole image ({categories[target]} is predicted nowhere)",
    )


def _explain_detections(job: TaskJob, det: Detector, folder: RunFolder) -> None:
    rows: list[dict[str, object]] = []
    empty = []
    for name, image in job.images.items():
        x = det.preprocess(image)
        boxes, labels, scores = top_detections(det, x, job.target, job.boxes, job.box_threshold)
        if not len(scores):
            empty.append(name)
            if job.progress:
                write(f"{name}: no box with a score of at least {job.box_threshold}")
            continue
        count = len(scores)
        batch = x.expand(count, *x.shape)  # the image once per box, one box explained in each
        wrapper = DetectionScores(
            det.model, boxes.expand(count, *boxes.shape), labels.expand(count, count)
        )
        cams = LayerCams(wrapper, det.layer, job.methods, layout=job.layout)
        maps = cams.attribute(batch, target=list(range(count)), relu_attributions=True)
        heatmaps = {m: wrapper.image_maps(v, batch) for m, v in maps.items()}
        panels = []
        for b in range(count):
            label = det.categories[int(labels[b])]
            x1, y1, x2, y2 = (float(v) for v in boxes[b])
            caption = f"{label} {float(scores[b]):.2f}"
            maps_of_box = {m: h[b] for m, h in heatmaps.items()}
            panels.append(figures.BoxPanel((x1, y1, x2, y2), caption, maps_of_box))
            rows.append(
                {
                    "image": name,
                    "rank": b + 1,
                    "label": int(labels[b]),
                    "class_name": label,
                    "score": f"{float(scores[b]):.6f}",
                    **dict(
                        zip(
                            ("x1", "y1", "x2", "y2"),
                            (f"{v:.1f}" for v in (x1, y1, x2, y2)),
                            strict=True,
                        )
                    ),
                }
            )
        figure = figures.detection_figure(x, panels, f"{name}: {count} detection(s), {det.name}")
        folder.write_bytes(f"{name}.png", figures.figure_files(figure, ["png"])["png"])
        if job.progress:
            write(f"{name}: " + ", ".join(panel.caption for panel in panels))
    if len(empty) == len(job.images):
        which = f" of class {job.model.categories[job.target]!r}" if job.target is not None else ""
        raise Failure(
            f"the detector found no box{which} with a score of at least {job.box_threshold} in "
            f"any image ({', '.join(empty)}): lower --box-threshold, or check --weights "
            "(randomly initialised weights find nothing)"
        )
    folder.write_csv("detections.csv", rows)
    if empty:
        folder.write_csv("no_detections.csv", [{"image": name} for name in empty])


@torch.no_grad()
def top_detections(
    det: Detector, image: Tensor, target: int | None, count: int, threshold: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``count`` highest-scoring detections in one ``(3, H, W)`` image with a score of at
    least ``threshold`` (and label ``target`` if given): boxes ``(B, 4)``, labels ``(B,)``,
    scores ``(B,)``, best first."""
    found = det.model([image])[0]
    keep = found["scores"] >= threshold
    if target is not None:
        keep &= found["labels"] == target
    scores = found["scores"][keep]
    order = scores.argsort(descending=True)[:count]
    return found["boxes"][keep][order], found["labels"][keep][order], scores[order]


__all__ = [
    "DEFAULT_BOXES",
    "DEFAULT_BOX_THRESHOLD",
    "TaskJob",
    "prepare",
    "region_of",
    "run_explain",
    "top_detections",
]
