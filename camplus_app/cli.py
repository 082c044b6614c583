"""The ``camplus`` command: explain images with every CAM method, and compare the methods.

    camplus explain [IMAGE ...]    overlay figures, one per image
    camplus compare [DATA ...]     the experiment of Lerma & Lucas, section 4: tables, CSV
                                   files, figures and a report

An IMAGE is a file, a folder of images, or the name of a bundled photograph (``chelsea``...);
without one, the bundled photographs are used. ``compare`` also takes a folder of class folders
(a labelled data set) and streams it (:mod:`camplus_app.commands.compare`). A command that does
not succeed ends with one line on stderr and an exit status (:func:`exit_status`, the one
policy of every command, with the statuses of :mod:`camplus_app.errors`): 2 for a usage error
(bad input, found before anything is written; a refused output folder or ``--resume``), 1 for a
failure while running, 130 after Ctrl-C. Each run writes into a folder of its own
(:mod:`camplus_app.runs`): a folder that holds another run or other files is refused unless
``--overwrite`` (or, for ``compare``, ``--resume``) says what to do with it.

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import torch

from camplus_app.errors import (
    INTERRUPTED,
    TRACEBACK_VARIABLE,
    Failure,
    Interrupted,
    PeerProcessFailed,
    UsageError,
    exit_status_of,
    one_line,
)
from camplus_app.options import (
    LAYOUT,
    LAYOUT_SYNTAX,
    PROG,
    non_negative_int,
    positive_int,
    probability,
    torchrun_place,
    with_layout_options,
)
from camplus_app.textsafe import printable
from captum_camplus import DEFAULT_METHODS, METHODS, __version__
from metrics.confidence import SCORES


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command and option."""
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    explain_parser = commands.add_parser(
        "explain",
        help="overlay each method's heatmap on each image",
        description="For each image, a figure with the image and each method's heatmap. With "
        "a torchvision segmentation model (--model fcn_*, deeplabv3_*, lraspp_*) the maps of one "
        "class over its predicted region; with a torchvision detector (fasterrcnn_*, "
        "retinanet_*, fcos_*, ssd*) one map per top box, drawn with the box on the image.",
    )
    compare_parser = commands.add_parser(
        "compare",
        help="compare the methods as Lerma & Lucas do (section 4)",
        description="Relative performance of each pair of methods with pre- and post-softmax "
        "explanation maps (Lerma & Lucas, tables 1-2), average drop, increase in confidence and "
        "win %, a boxplot of per-image relative performance (Lerma & Lucas, figure 6) and a "
        "histogram of the Grad-CAM++ alphas (Lerma & Lucas, figures 3-4).",
    )
    _add_compare_only(compare_parser)
    _add_explain_only(explain_parser)
    _add_common(explain_parser, "explain", resumable=False)
    _add_common(compare_parser, "compare", resumable=True)
    return parser


def _add_compare_only(sub: argparse.ArgumentParser) -> None:
    """The options of ``compare`` alone: the data set, the subset and ``--resume``."""
    sub.add_argument(
        "--threshold",
        type=probability,
        help="score only images whose explained class has a softmax above this (Lerma & Lucas "
        "use 0.5 with the true class; default: every image)",
    )
    sub.add_argument(
        "--metrics",
        help="comma-separated metrics, or all: papers (average drop, increase in confidence, "
        "win %%, relative performance; always scored), deletion, insertion, road-morf, "
        "road-lerf, randomisation (default: papers)",
    )
    sub.add_argument("--limit", type=positive_int, help="score a random subset of this many images")
    sub.add_argument(
        "--seed",
        type=int,
        help="seeds the random subset of --limit and the bootstrap intervals of the tables "
        "(default: 0): reproducible",
    )
    sub.add_argument(
        "--workers",
        type=non_negative_int,
        default=2,
        help="processes that decode the images (default: 2; 0 decodes in the main process)",
    )
    sub.add_argument(
        "--skip-unmatched",
        action="store_true",
        help="score the class folders that match a class of the model and list the others "
        "(default: refuse a data set with folders that match no class)",
    )
    sub.add_argument(
        "--merge-classes",
        action="store_true",
        help="score class folders that name the same class as one class, and say so in the "
        "report (default: refuse them, naming the folders)",
    )
    sub.add_argument(
        "--keep-duplicates",
        action="store_true",
        help="score every file of the class folders, even those with the same bytes as "
        "another (default: score each picture once, the first path in sorted order)",
    )
    sub.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in the output folder: score only the images it has not scored "
        "yet, with its settings (options left out keep the run's values)",
    )


def _add_explain_only(sub: argparse.ArgumentParser) -> None:
    """The options of ``explain`` alone: ``--class`` and the detectors' ``--boxes`` and
    ``--box-threshold`` (:mod:`camplus_app.commands.explain_tasks`)."""
    sub.add_argument(
        "--class",
        dest="target",
        metavar="CLASS",
        help="the same as --target; for a segmentation model the class to explain (default: "
        "the predicted region, the class other than the background that covers most pixels), "
        "for a detector the class whose boxes to explain (default: any)",
    )
    sub.add_argument(
        "--boxes",
        type=positive_int,
        metavar="N",
        help="for a detector: explain this many of the highest-scoring boxes per image, each "
        "on its own (default: 3)",
    )
    sub.add_argument(
        "--box-threshold",
        type=probability,
        metavar="SCORE",
        help="for a detector: explain only boxes scoring at least this (default: 0.5)",
    )


def _add_common(sub: argparse.ArgumentParser, name: str, *, resumable: bool) -> None:
    """The options every command takes. A ``resumable`` command keeps None for an option not
    given, so that a resumed run takes its own value for it; the others get the defaults."""

    def default(value: object) -> object:
        return None if resumable else value

    labelled = "; or one folder of class folders, a labelled data set" if resumable else ""
    sub.add_argument(
        "images",
        nargs="*",
        metavar="DATA" if resumable else "IMAGE",
        help="image files, folders, or bundled photograph names (default: all bundled)" + labelled,
    )
    sub.add_argument(
        "--methods",
        default=default(",".join(DEFAULT_METHODS)),
        help=f"comma-separated CAM methods of {', '.join(METHODS)}, or 'all' for every one "
        f"(default: {','.join(DEFAULT_METHODS)})",
    )
    true_class = "the true class of a data set of class folders, otherwise " if resumable else ""
    sub.add_argument(
        "--target",
        help=f"class index or name to explain (default: {true_class}the predicted class)",
    )
    _add_model_options(sub)
    _add_layout_option(sub, default(LAYOUT))
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
    sub.add_argument(
        "--scores",
        choices=SCORES,
        default=default(SCORES[0]),
        help="how the model's outputs become the scores Y and O: softmax over the classes "
        "(the default, the papers'), sigmoid per label (a binary model with one output, "
        "multi-label models) or the raw outputs",
    )
    sub.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    sub.add_argument("--batch-size", type=positive_int, default=default(8), help="default: 8")
    sub.add_argument(
        "--threads",
        type=positive_int,
        help="torch threads per process (default: what torch picks; torchrun sets 1). "
        "Float32 sums depend on it: equal thread counts give equal tables. Recorded in "
        "the manifest",
    )
    sub.add_argument("-q", "--quiet", action="store_true", help="no progress bars or tables")


def _add_model_options(sub: argparse.ArgumentParser) -> None:
    """``--model``, ``--weights`` and ``--layer``: the classifier and its CAM layer."""
    sub.add_argument(
        "--model",
        default=None,
        help="timm or torchvision architecture (prefix timm/ or torchvision/ to choose; "
        "CNNs and transformers such as vit_b_16, swin_t, convnext_tiny), needing --weights "
        "unless it is the bundled tf_efficientnet_lite0 (the default); or a local Hugging "
        "Face model folder (config.json and weights, loaded offline)",
    )
    sub.add_argument("--weights", type=Path, help="local weights file (a state dict)")
    sub.add_argument(
        "--layer",
        help="CAM layer, a dotted module name (default: bn2 for the bundled model; the "
        "last block's first norm for a vision transformer: norm1 (timm, torchvision Swin), "
        "ln_1 (torchvision ViT), layernorm_before (Hugging Face); otherwise the last layer "
        "with a spatial output). Token and channels-last layers are read from their shapes, "
        "confirmed by the model's attributes",
    )


def _add_layout_option(sub: argparse.ArgumentParser, default: object) -> None:
    """``--layout``: how the CAM layer's tensor is read (:func:`.options.parse_layout`)."""
    sub.add_argument(
        "--layout",
        default=default,
        metavar="LAYOUT",
        help=f"how the CAM layer's tensor is read: {LAYOUT_SYNTAX} (default: {LAYOUT}, the one "
        "reading that the model's attributes or a locality probe confirm; none: channels "
        "first as Captum reads it; tokens: the prefix count from the model; tokens:P:HxW: P "
        "prefix tokens before an H x W patch grid)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (:func:`exit_status`)."""
    words = sys.argv[1:] if argv is None else list(argv)

    def parse_and_run() -> None:
        args = build_parser().parse_args(words)
        args.command_line = [PROG, *words]  # for the provenance of the run
        dispatch(args)

    return exit_status(parse_and_run)


def dispatch(args: argparse.Namespace) -> None:
    """Run the parsed command; it raises on failure (:func:`exit_status` makes that a status)."""
    # Each command's module is imported when it runs, for start-up time: `camplus --help` and a
    # mistyped option answer without loading the model zoo, the figures and the metrics (whose
    # Quantus import alone takes seconds).
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.command == "explain":
        from camplus_app.commands.explain import run
    else:
        from camplus_app.commands.compare import run
    run(args)


def exit_status(command: Callable[[], None]) -> int:
    """The one exit-status policy of every command: 0 when ``command`` returns, 130 after
    Ctrl-C, 2 for a usage error and 1 for a failure (:mod:`camplus_app.errors`).

    Each ends with one line on stderr: our messages as written, any other exception with its
    type and a hint to set ``CAMPLUS_TRACEBACK=1``, which prints the traceback of every error
    first. Under ``torchrun`` the first process speaks for the errors all processes meet (a
    usage error, which they agree on, and :class:`~camplus_app.errors.PeerProcessFailed`); a
    process's own failure is told by that process, with its rank."""
    rank, world, _ = torchrun_place()
    try:
        command()
    except KeyboardInterrupt as stop:
        message = str(stop) if isinstance(stop, Interrupted) else f"{PROG}: interrupted"
        if rank == 0:
            print(f"\n{message}", file=sys.stderr)
        return INTERRUPTED
    except Exception as error:
        if os.environ.get(TRACEBACK_VARIABLE):
            traceback.print_exc()
        shared = isinstance(error, (UsageError, PeerProcessFailed))
        if rank == 0 or not shared:
            where = f" (process {rank} of {world})" if world > 1 and not shared else ""
            print(f"{PROG}: error{where}: {printable(_message(error))}", file=sys.stderr)
        return exit_status_of(error)
    return 0


def _message(error: Exception) -> str:
    """What the user reads: our message as written (all of it: it may say how to resume), any
    other error as one line with its type and how to see its traceback."""
    if isinstance(error, (UsageError, Failure)):
        return with_layout_options(str(error).strip())
    return with_layout_options(
        f"{one_line(error)} (a failure; set {TRACEBACK_VARIABLE}=1 to see the traceback)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
