"""The ``camplus`` command: explain images with every CAM method, and compare the methods.

    camplus explain [IMAGE ...]    overlay figures, one per image camplus compare [IMAGE ...]
    Lerma & Lucas, section 4 experiment: tables, CSV files and figures

An IMAGE is a file, a folder of images, or the name of a bundled photograph (``chelsea``...);
without one, the bundled photographs are used. Every failure (bad input, or one met while
running) ends with a one-line error and exit status 2; output is written to a temporary folder
and moved into place only when complete.

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import torch
from torch import Tensor

from captum_camplus import METHODS, LayerCams, method_name
from captum_camplus.maps import upsample_and_normalize
from captum_camplus.methods import LayerGradCamPlusPlus

if TYPE_CHECKING:
    from PIL.Image import Image

    from camplus_app.zoo import Classifier
    from metrics import EvaluationResult

PROG = "camplus"
#: Exit status for bad input (as argparse uses).
USAGE_ERROR = 2
#: How the CAM layer's tensor is read: as the model's attributes say (timm ViT tokens, Swin
#: channels last; every other layer channels first).
LAYOUT = "auto"


class UsageError(Exception):
    """Bad input from the user: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


@dataclass
class Job:
    """Validated input of a command: everything is loaded before any work starts."""

    classifier: Classifier
    images: dict[str, Image]
    methods: list[str]
    target: int | None
    output: Path
    batch_size: int
    progress: bool
    threshold: float | None = None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    explain = commands.add_parser(
        "explain",
        help="overlay each method's heatmap on each image",
        description="For each image, a figure with the image and each method's heatmap.",
    )
    compare = commands.add_parser(
        "compare",
        help="compare the methods as Lerma & Lucas do (section 4)",
        description="Relative performance of each pair of methods with pre- and post-softmax "
        "explanation maps (Lerma & Lucas, tables 1-2), average drop, increase in confidence and "
        "win %, a boxplot of per-image relative performance (Lerma & Lucas, figure 6) and a "
        "histogram of the Grad-CAM++ alphas (Lerma & Lucas, figures 3-4).",
    )
    compare.add_argument(
        "--threshold",
        type=_probability,
        help="score only images whose explained class has a softmax above this (Lerma & Lucas "
        "use 0.5 with the true class; default: every image)",
    )
    for sub, name in ((explain, "explain"), (compare, "compare")):
        sub.add_argument(
            "images",
            nargs="*",
            metavar="IMAGE",
            help="image files, folders, or bundled photograph names (default: all bundled)",
        )
        sub.add_argument(
            "--methods",
            default=",".join(METHODS),
            help=f"comma-separated CAM methods (default: {','.join(METHODS)})",
        )
        sub.add_argument(
            "--target", help="class index or name to explain (default: the predicted class)"
        )
        sub.add_argument(
            "--model",
            default=None,
            help="timm or torchvision architecture (prefix timm/ or torchvision/ to choose); "
            "needs --weights unless it is the bundled tf_efficientnet_lite0 (the default)",
        )
        sub.add_argument("--weights", type=Path, help="local weights file (a state dict)")
        sub.add_argument(
            "--layer",
            help="CAM layer, a dotted module name (default: bn2 for the bundled model; the "
            "last block's norm1 for a vision transformer (ViT, DeiT, Swin...); otherwise the "
            "last layer with a spatial output). Token and channels-last layers are read as "
            "the model's attributes say",
        )
        sub.add_argument(
            "-o",
            "--output",
            type=Path,
            default=Path(f"{PROG}-output") / name,
            help=f"output folder (default: {PROG}-output/{name})",
        )
        sub.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
        sub.add_argument("--batch-size", type=_positive_int, default=8, help="default: 8")
        sub.add_argument("-q", "--quiet", action="store_true", help="no progress bars or tables")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for any failure).

    Every failure, in the arguments or while running (an image Pillow refuses, a folder that
    cannot be written, a layer without a spatial output, a device torch cannot use...), is one
    line on stderr. Set the environment variable ``CAMPLUS_TRACEBACK=1`` to get the traceback.
    """
    try:
        args = build_parser().parse_args(argv)
        job = prepare(args)
        run = {"explain": run_explain, "compare": run_compare}[args.command]
        with staged_output(job.output) as folder:
            run(job, folder)
    except Exception as error:
        if os.environ.get("CAMPLUS_TRACEBACK") and not isinstance(error, UsageError):
            raise
        print(f"{PROG}: error: {one_line(error)}", file=sys.stderr)
        return USAGE_ERROR
    if job.progress:
        print(f"results in {job.output}")
    return 0


def one_line(error: BaseException) -> str:
    """The error as one line: our messages as they are, others prefixed with their type."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else "(no message)"
    if isinstance(error, (UsageError, ValueError, OSError)):
        return text
    return f"{type(error).__name__}: {text}"


def prepare(args: argparse.Namespace) -> Job:
    """Check and load everything the command needs; bad input raises :class:`UsageError`."""
    from camplus_app import zoo
    from camplus_app.images import resolve_images

    try:
        methods = _methods(args.methods)
        device = _device(args.device)
        output = _output_folder(args.output)
        images = resolve_images(args.images)
        if args.weights is not None and args.model is None:
            raise UsageError("--weights needs --model, the architecture the weights are for")
        classifier = zoo.load_classifier(args.model or zoo.DEFAULT_MODEL, args.weights, args.layer)
        target = None if args.target is None else classifier.class_index(args.target)
    except (ValueError, FileNotFoundError, ImportError) as error:
        raise UsageError(str(error)) from error
    return Job(
        classifier=classifier.to(device),
        images=images,
        methods=methods,
        target=target,
        output=output,
        batch_size=args.batch_size,
        progress=not args.quiet,
        threshold=getattr(args, "threshold", None),
    )


def run_explain(job: Job, folder: Path) -> None:
    """Write ``<image>.png``: the image and each method's heatmap, titled with the class."""
    from camplus_app.figures import overlay_figure

    clf = job.classifier
    cams = LayerCams(clf.model, clf.layer, job.methods, layout=LAYOUT)
    rows = [("image", "class_index", "class_name", "probability")]
    for names, x in _batches(job, progress="explain"):
        targets, probabilities = _targets(job, x)
        maps = cams.attribute(x, target=targets, relu_attributions=True)
        heatmaps = {name: upsample_and_normalize(m, x.shape[-2:]) for name, m in maps.items()}
        for i, name in enumerate(names):
            index = int(targets[i])
            label = f"{clf.categories[index]} (class {index}), softmax {probabilities[i]:.2f}"
            figure = overlay_figure(
                x[i], {m: h[i] for m, h in heatmaps.items()}, f"{name}: explaining {label}"
            )
            figure.savefig(folder / f"{name}.png", dpi=100)
            rows.append((name, index, clf.categories[index], f"{probabilities[i]:.6f}"))
            if job.progress:
                _write(f"{name}: {label}")
    _write_csv(folder / "predictions.csv", rows)


def run_compare(job: Job, folder: Path) -> None:
    """The experiment of Lerma & Lucas, section 4 with :func:`metrics.evaluate_methods`.

    Writes ``scores.csv`` (average drop, increase in confidence, win % per method and kind of map),
    ``images.csv`` (per-image scores), and with two methods or more ``relative_performance.csv``
    (Lerma & Lucas, tables 1-2) and ``relative_performance.png`` (Lerma & Lucas, figure 6); with
    Grad-CAM++, ``alphas.png`` (Lerma & Lucas, figures 3-4).
    """
    from camplus_app.figures import alpha_histogram, relative_performance_boxplot
    from metrics import evaluate_methods

    clf = job.classifier
    alphas = _AlphaRecorder(clf.model)
    methods = {name: METHODS[name] for name in job.methods}
    if "Grad-CAM++" in methods:
        methods["Grad-CAM++"] = alphas
    try:
        result = evaluate_methods(
            clf.model,
            clf.layer,
            _ImageBatches(job),
            methods=methods,
            threshold=job.threshold,
            progress=job.progress,
            layout=LAYOUT,
        )
    except ValueError as error:
        if job.threshold is not None and "threshold" in str(error):  # no image passed it
            raise UsageError(str(error)) from error
        raise
    names = list(job.images)
    image_rows = [{"image": names[row["index"]], **row} for row in result.image_rows()]
    for row in image_rows:
        row["class name"] = clf.categories[row["target"]]
    _write_dicts(folder / "scores.csv", result.summary())
    _write_dicts(folder / "images.csv", image_rows)
    if len(result.methods) > 1:
        _write_dicts(folder / "relative_performance.csv", result.relative_performance())
        figure = relative_performance_boxplot(_per_image_ratios(result))
        figure.savefig(folder / "relative_performance.png", dpi=100)
    if "Grad-CAM++" in methods:
        alpha_histogram(alphas.pre_softmax()).savefig(folder / "alphas.png", dpi=100)
    if job.progress:
        header = f"{clf.name}, layer {clf.layer_name}: "
        _write(header + result.format())


class _AlphaRecorder:
    """A Grad-CAM++ factory for the driver that keeps the alphas of every call it makes.

    The driver builds the methods once per batch and kind of map; it calls the model itself for
    pre-softmax maps and a softmax wrapper for post-softmax ones, which tells the two apart.
    """

    def __init__(self, model: Callable[..., Tensor]) -> None:
        self.model = model
        self.made: list[tuple[bool, LayerGradCamPlusPlus]] = []

    def __call__(
        self,
        forward_func: Callable[..., Tensor],
        layer: torch.nn.Module,
        device_ids: list[int] | None = None,
    ) -> LayerGradCamPlusPlus:
        cam = LayerGradCamPlusPlus(forward_func, layer, device_ids)
        self.made.append((forward_func is self.model, cam))
        return cam

    def pre_softmax(self) -> Tensor:
        """All alphas of the pre-softmax maps (Lerma & Lucas, figures 3-4 use those), flattened."""
        kept = [
            cam.last_diagnostics.alphas.flatten()
            for pre, cam in self.made
            if pre and cam.last_diagnostics is not None
        ]
        if not kept:
            raise RuntimeError("no pre-softmax Grad-CAM++ call was recorded")
        return torch.cat(kept)


class _ImageBatches:
    """The job's batches as the driver takes them: ``x``, or ``(x, targets)`` for ``--target``."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def __len__(self) -> int:
        return -(-len(self.job.images) // self.job.batch_size)

    def __iter__(self) -> Iterator[Tensor | tuple[Tensor, Tensor]]:
        for _, x in _batches(self.job):  # the driver shows its own progress bar
            if self.job.target is None:
                yield x
            else:
                yield x, torch.full((len(x),), self.job.target, device=x.device)


def _per_image_ratios(result: EvaluationResult) -> dict[str, dict[str, list[float]]]:
    """``O'_i / O_i`` for each pair of ``result.relative_performance()``, per kind of map."""
    ratios: dict[str, dict[str, list[float]]] = {}
    for source in result.maps_from:
        log_o = result.log_o[source]
        ratios[f"{source} maps"] = {
            f"{new} vs {base}": (log_o[new] - log_o[base]).exp().tolist()
            for j, new in enumerate(result.methods)
            for base in result.methods[:j]
        }
    return ratios


def _targets(job: Job, x: Tensor) -> tuple[Tensor, list[float]]:
    """The classes to explain (given or predicted) and their softmax probabilities."""
    with torch.no_grad():
        probabilities = job.classifier.model(x).softmax(dim=-1)
    if job.target is None:
        targets = probabilities.argmax(dim=-1)
    else:
        targets = torch.full((x.shape[0],), job.target, device=x.device)
    return targets, probabilities.gather(1, targets[:, None]).squeeze(1).tolist()


def _batches(job: Job, progress: str | None = None) -> Iterator[tuple[list[str], Tensor]]:
    """The images' names and preprocessed batches on the device, made lazily; with a progress
    bar titled ``progress`` if given."""
    from tqdm.auto import tqdm

    names = list(job.images)
    show = progress is not None and job.progress
    with tqdm(total=len(names), desc=progress, unit="image", disable=not show) as bar:
        for start in range(0, len(names), job.batch_size):
            chunk = names[start : start + job.batch_size]
            yield chunk, job.classifier.preprocess([job.images[n] for n in chunk])
            bar.update(len(chunk))


@contextmanager
def staged_output(folder: Path) -> Iterator[Path]:
    """A temporary folder whose files move into ``folder`` only if the block succeeds.

    If ``folder`` does not exist, the staging folder is renamed to it (atomic); otherwise each
    file replaces its namesake in it. On error the staging folder is removed.
    """
    stage = Path(tempfile.mkdtemp(prefix=f".{PROG}-", dir=_existing_ancestor(folder)))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    umask = os.umask(0)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)  # mkdtemp makes it private
    folder.parent.mkdir(parents=True, exist_ok=True)
    if not folder.exists():
        stage.rename(folder)
        return
    for file in stage.iterdir():
        os.replace(file, folder / file.name)
    stage.rmdir()


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _methods(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UsageError("--methods is empty: give at least one method")
    chosen = [method_name(name) for name in names]  # ValueError names the bad one
    return list(dict.fromkeys(chosen))


def _device(text: str | None) -> torch.device:
    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError as error:
        raise UsageError(f"unknown device {text!r}: {error}") from error
    available: dict[str, Callable[[], bool]] = {
        "cpu": lambda: True,
        "cuda": torch.cuda.is_available,
        "mps": torch.backends.mps.is_available,
    }
    if not available.get(device.type, lambda: True)():
        raise UsageError(f"device {text!r} is not available on this machine")
    if device.type == "meta":
        raise UsageError("device 'meta' holds no data: choose cpu or cuda")
    try:  # an index past the last GPU, a backend torch was not built with
        torch.zeros(1, device=device).add_(1).cpu()
    except Exception as error:
        raise UsageError(f"device {text!r} cannot be used: {one_line(error)}") from error
    return device


def _output_folder(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise UsageError(f"output {path} exists and is not a folder")
    ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        raise UsageError(f"output {path} cannot be created: {ancestor} is a file, not a folder")
    try:  # the one reliable test (os.access is wrong for root and for read-only file systems)
        os.rmdir(tempfile.mkdtemp(prefix=f".{PROG}-probe-", dir=ancestor))
    except OSError as error:
        raise UsageError(
            f"output {path} cannot be written: {error.strerror or error} in {ancestor}"
        ) from error
    return path


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def _write_csv(path: Path, rows: Sequence[Sequence[object]]) -> None:
    with path.open("w", newline="") as file:
        csv.writer(file).writerows(rows)


def _write_dicts(path: Path, rows: Sequence[dict[str, object]]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)


def _write(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line)


def _version() -> str:
    from captum_camplus import __version__

    return __version__


if __name__ == "__main__":
    raise SystemExit(main())
