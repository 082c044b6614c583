"""``camplus explain``: one figure per image, the image and each method's heatmap over it."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from tqdm.auto import tqdm

from camplus_app import figures, zoo
from camplus_app.commands import explain_tasks
from camplus_app.errors import UsageError, first_line
from camplus_app.images import check_aspect, resolve_images
from camplus_app.options import (
    LAYOUT,
    check_scores,
    layout_option,
    output_path,
    parse_device,
    parse_layout,
    parse_methods,
    write,
)
from camplus_app.provenance import collect
from camplus_app.runs import RunFolder, open_run
from camplus_app.task_models import task_of
from captum_camplus import LayerCams
from captum_camplus.layouts import LayoutSpec
from captum_camplus.maps import upsample_and_normalize
from metrics.confidence import ScoreKind, class_scores

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass
class Job:
    """Validated input of ``explain``: everything is loaded before any work starts."""

    classifier: zoo.Classifier
    images: dict[str, Image]
    methods: list[str]
    target: int | None
    output: Path
    batch_size: int
    progress: bool
    overwrite: bool = False
    scores: ScoreKind = "softmax"  #: ``--scores``: how the outputs become the figures' scores
    layout: LayoutSpec = LAYOUT  #: ``--layout``: how the CAM layer's tensor is read


def run(args: argparse.Namespace) -> None:
    """``camplus explain`` from parsed arguments; a failed run leaves nothing behind. A
    torchvision segmentation model or detector goes to :mod:`.explain_tasks`."""
    task = task_of(args.model)
    if task is None:
        job = prepare(args)
        clf = job.classifier
        header = f"{clf.name}, CAM layer {clf.layer_name}"
        _run_in_folder(
            args,
            job.output,
            job.overwrite,
            job.progress,
            clf.device,
            header,
            settings(job, args),
            lambda folder: run_explain(job, folder),
        )
        return
    methods, device, output, images = _common(args)
    task_job = explain_tasks.prepare(args, task, methods, device, output, images)
    model = task_job.model
    header = f"{model.name} ({task}), CAM layer {model.layer_name}"
    _run_in_folder(
        args,
        output,
        task_job.overwrite,
        task_job.progress,
        model.device,
        header,
        task_job.settings(args),
        lambda folder: explain_tasks.run_explain(task_job, folder),
    )


def _run_in_folder(
    args: argparse.Namespace,
    output: Path,
    overwrite: bool,
    progress: bool,
    device: torch.device,
    header: str,
    run_settings: dict[str, object],
    work: Callable[[RunFolder], None],
) -> None:
    """Run ``work`` in a new run folder with its settings and provenance; discard the folder
    if it fails."""
    folder = open_run(output, "explain", overwrite=overwrite)
    provenance = collect(device, command=getattr(args, "command_line", None))
    try:
        folder.start("explain", run_settings, provenance.to_json())
        if progress:
            write(header)
        work(folder)
    except BaseException:
        folder.discard()
        raise
    provenance.finish()
    folder.complete(provenance=provenance.to_json())
    if progress:
        print(f"results in {output}")


def _common(args: argparse.Namespace) -> tuple[list[str], torch.device, Path, dict[str, Image]]:
    """The options of every model: methods, device, output folder and images, checked."""
    try:
        methods = parse_methods(args.methods)
        device = parse_device(args.device)
        output = output_path(args.output)
        images = resolve_images(args.images)
        if args.weights is not None and args.model is None:
            raise UsageError("--weights needs --model, the architecture the weights are for")
        for image in images.values():
            check_aspect(image)
    except (ValueError, FileNotFoundError, ImportError) as error:
        raise UsageError(first_line(str(error))) from error
    return methods, device, output, images


def prepare(args: argparse.Namespace) -> Job:
    """Check and load everything the command needs; bad input raises :class:`UsageError`."""
    methods, device, output, images = _common(args)
    if getattr(args, "boxes", None) is not None or getattr(args, "box_threshold", None) is not None:
        raise UsageError("--boxes and --box-threshold apply to detectors, not to classifiers")
    layout = parse_layout(args.layout)
    try:
        classifier = zoo.load_classifier(args.model or zoo.DEFAULT_MODEL, args.weights, args.layer)
        classifier.to(device).check_layer(layout)
        target = None if args.target is None else classifier.class_index(args.target)
        check_scores(args.scores, len(classifier.categories), classifier.name)
    # the images, the zoo and the core raise these for input the user can fix (an unreadable
    # image, a bad weights file, a layer without a map, a library to install)
    except (ValueError, FileNotFoundError, ImportError) as error:
        raise UsageError(first_line(str(error))) from error
    return Job(
        classifier=classifier,
        images=images,
        methods=methods,
        target=target,
        output=output,
        batch_size=args.batch_size,
        progress=not args.quiet,
        overwrite=args.overwrite,
        scores=args.scores,
        layout=layout,
    )


def settings(job: Job, args: argparse.Namespace) -> dict[str, object]:
    """Every setting of the run, for its manifest."""
    clf = job.classifier
    return {
        "images": [str(a) for a in args.images],
        "image names": list(job.images),
        "model": clf.name,
        "weights": None if args.weights is None else str(args.weights.resolve()),
        "layer": clf.layer_name,
        "layout": layout_option(job.layout),
        "methods": job.methods,
        "target": job.target,
        "target name": None if job.target is None else clf.categories[job.target],
        "scores": job.scores,
        "maps": "pre-softmax, ReLU'd, upsampled and min-max normalised per map",
        "batch size": job.batch_size,
        "device": str(clf.device),
    }


def run_explain(job: Job, folder: RunFolder) -> None:
    """Write ``<image>.png``: the image and each method's heatmap, titled with the class."""
    clf = job.classifier
    cams = LayerCams(clf.model, clf.layer, job.methods, layout=job.layout)
    rows = []
    for names, x in _batches(job, progress="explain"):
        targets, probabilities = _targets(job, x)
        maps = cams.attribute(x, target=targets, relu_attributions=True)
        heatmaps = {name: upsample_and_normalize(m, x.shape[-2:]) for name, m in maps.items()}
        for i, name in enumerate(names):
            index = int(targets[i])
            label = f"{clf.categories[index]} (class {index}), {job.scores} {probabilities[i]:.2f}"
            figure = figures.overlay_figure(
                x[i], {m: h[i] for m, h in heatmaps.items()}, f"{name}: explaining {label}"
            )
            png = figures.figure_files(figure, ["png"])["png"]
            folder.write_bytes(f"{name}.png", png)
            rows.append(
                {
                    "image": name,
                    "class_index": index,
                    "class_name": clf.categories[index],
                    "probability" if job.scores != "raw" else "score": f"{probabilities[i]:.6f}",
                }
            )
            if job.progress:
                write(f"{name}: {label}")
    folder.write_csv("predictions.csv", rows)


def _targets(job: Job, x: Tensor) -> tuple[Tensor, list[float]]:
    """The classes to explain (given or predicted) and their scores (``--scores``)."""
    scores = class_scores(job.classifier.model, x, job.target, job.scores)
    return scores.target, scores.value.tolist()


def _batches(job: Job, progress: str | None = None) -> Iterator[tuple[list[str], Tensor]]:
    """The images' names and preprocessed batches on the device, made lazily; with a progress
    bar titled ``progress`` if given."""
    names = list(job.images)
    show = progress is not None and job.progress
    with tqdm(total=len(names), desc=progress, unit="image", disable=not show) as bar:
        for start in range(0, len(names), job.batch_size):
            chunk = names[start : start + job.batch_size]
            yield chunk, job.classifier.preprocess([job.images[n] for n in chunk])
            bar.update(len(chunk))


__all__ = ["Job", "prepare", "run", "run_explain"]
