"""The ``camplus`` command: explain images with every CAM method, and compare the methods.

    camplus explain [IMAGE ...]    overlay figures, one per image
    camplus compare [DATA ...]     the experiment of Lerma & Lucas, section 4: tables, CSV
                                   files, figures and a report

An IMAGE is a file, a folder of images, or the name of a bundled photograph (``chelsea``...);
without one, the bundled photographs are used. ``compare`` also takes a folder of class folders
(a labelled data set) and streams it (:mod:`camplus_app.compare`). Every failure (bad input, or
one met while running) ends with a one-line error and exit status 2; bad input is found before
anything is written. Each run writes into a folder of its own (:mod:`camplus_app.runs`): a
folder that holds another run or other files is refused unless ``--overwrite`` (or, for
``compare``, ``--resume``) says what to do with it.

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import torch
from torch import Tensor

from camplus_app.runs import RunFolder, RunFolderError, open_run
from captum_camplus import METHODS, LayerCams, method_name
from captum_camplus.maps import upsample_and_normalize

if TYPE_CHECKING:
    from PIL.Image import Image

    from camplus_app.zoo import Classifier

PROG = "camplus"
#: Exit status for bad input (as argparse uses).
USAGE_ERROR = 2
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130
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
    overwrite: bool = False


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
    compare.add_argument(
        "--limit", type=_positive_int, help="score a random subset of this many images"
    )
    compare.add_argument(
        "--seed", type=int, help="the random subset of --limit (default: 0): reproducible"
    )
    compare.add_argument(
        "--workers",
        type=_non_negative_int,
        default=2,
        help="processes that decode the images (default: 2; 0 decodes in the main process)",
    )
    compare.add_argument(
        "--skip-unmatched",
        action="store_true",
        help="score the class folders that match a class of the model and list the others "
        "(default: refuse a data set with folders that match no class)",
    )
    compare.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in the output folder: score only the images it has not scored "
        "yet, with its settings (options left out keep the run's values)",
    )
    for sub, name in ((explain, "explain"), (compare, "compare")):
        # compare keeps None for "not given": a resumed run takes its own values for those
        resumable = name == "compare"
        labelled = "; or one folder of class folders, a labelled data set" if resumable else ""
        sub.add_argument(
            "images",
            nargs="*",
            metavar="DATA" if resumable else "IMAGE",
            help="image files, folders, or bundled photograph names (default: all bundled)"
            + labelled,
        )
        sub.add_argument(
            "--methods",
            default=None if resumable else ",".join(METHODS),
            help=f"comma-separated CAM methods (default: {','.join(METHODS)})",
        )
        true_class = (
            "the true class of a data set of class folders, otherwise " if resumable else ""
        )
        sub.add_argument(
            "--target",
            help=f"class index or name to explain (default: {true_class}the predicted class)",
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
            default=str(Path(f"{PROG}-output") / name),
            help=f"output folder, new or empty (default: {PROG}-output/{name})",
        )
        sub.add_argument(
            "--overwrite",
            action="store_true",
            help="replace the earlier run in the output folder (only files camplus wrote)",
        )
        sub.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
        sub.add_argument(
            "--batch-size",
            type=_positive_int,
            default=None if resumable else 8,
            help="default: 8",
        )
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
        if args.command == "compare":
            from camplus_app.compare import run_compare

            return run_compare(args)
        job = prepare(args)
        run = open_run(job.output, "explain", overwrite=job.overwrite)
        try:
            run.start("explain", {"images": [str(a) for a in args.images]})
            run_explain(job, run)
        except BaseException:
            run.discard()  # a failed run leaves nothing behind
            raise
        run.complete()
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as error:
        ours = (UsageError, RunFolderError)
        if os.environ.get("CAMPLUS_TRACEBACK") and not isinstance(error, ours):
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
    if isinstance(error, (UsageError, RunFolderError, ValueError, OSError)):
        return text
    return f"{type(error).__name__}: {text}"


def prepare(args: argparse.Namespace) -> Job:
    """Check and load everything the command needs; bad input raises :class:`UsageError`."""
    from camplus_app import zoo
    from camplus_app.images import resolve_images

    try:
        methods = _methods(args.methods)
        device = _device(args.device)
        output = output_path(args.output)
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
        overwrite=args.overwrite,
    )


def run_explain(job: Job, run: RunFolder) -> None:
    """Write ``<image>.png``: the image and each method's heatmap, titled with the class."""
    from camplus_app.figures import overlay_figure

    clf = job.classifier
    cams = LayerCams(clf.model, clf.layer, job.methods, layout=LAYOUT)
    rows = []
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
            figure.savefig(run.file(f"{name}.png"), dpi=100)
            rows.append(
                {
                    "image": name,
                    "class_index": index,
                    "class_name": clf.categories[index],
                    "probability": f"{probabilities[i]:.6f}",
                }
            )
            if job.progress:
                _write(f"{name}: {label}")
    run.write_csv("predictions.csv", rows)


def _targets(job: Job, x: Tensor) -> tuple[Tensor, list[float]]:
    """The classes to explain (given or predicted) and their softmax probabilities."""
    from metrics import class_scores

    scores = class_scores(job.classifier.model, x, job.target)
    return scores.target, scores.value.tolist()


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


def _methods(text: str | None) -> list[str]:
    """Method display names from a comma-separated list (None: all of them)."""
    if text is None:
        return list(METHODS)
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


def output_path(text: str) -> Path:
    """The output folder named on the command line: never an empty name (the current folder)."""
    if not text.strip():
        raise UsageError("--output is empty: give a folder name (a new or empty folder)")
    path = Path(text)
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


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def _write(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line)


def _version() -> str:
    from captum_camplus import __version__

    return __version__


if __name__ == "__main__":
    raise SystemExit(main())
