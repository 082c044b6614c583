"""The ``camplus`` command: explain images with every CAM method, and compare the methods.

    camplus explain [IMAGE ...]    overlay figures, one per image
    camplus compare [DATA ...]     the experiment of Lerma & Lucas, section 4: tables, CSV
                                   files, figures and a report

An IMAGE is a file, a folder of images, or the name of a bundled photograph (``chelsea``...);
without one, the bundled photographs are used. ``compare`` also takes a folder of class folders
(a labelled data set) and streams it (:mod:`camplus_app.commands.compare`). Every failure
(bad input, or one met while running) ends with a one-line error and exit status 2
(:func:`exit_status`, the one policy of every command); bad input is found before anything is
written. Each run writes into a folder of its own (:mod:`camplus_app.runs`): a
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import torch

from camplus_app.options import (
    INTERRUPTED,
    OUR_ERRORS,
    PROG,
    SCORES,
    USAGE_ERROR,
    Interrupted,
    UsageError,
    non_negative_int,
    one_line,
    positive_int,
    probability,
    torchrun_place,
)
from camplus_app.runs import printable
from captum_camplus import METHODS, __version__


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    explain_parser = commands.add_parser(
        "explain",
        help="overlay each method's heatmap on each image",
        description="For each image, a figure with the image and each method's heatmap.",
    )
    compare_parser = commands.add_parser(
        "compare",
        help="compare the methods as Lerma & Lucas do (section 4)",
        description="Relative performance of each pair of methods with pre- and post-softmax "
        "explanation maps (Lerma & Lucas, tables 1-2), average drop, increase in confidence and "
        "win %, a boxplot of per-image relative performance (Lerma & Lucas, figure 6) and a "
        "histogram of the Grad-CAM++ alphas (Lerma & Lucas, figures 3-4).",
    )
    compare_parser.add_argument(
        "--threshold",
        type=probability,
        help="score only images whose explained class has a softmax above this (Lerma & Lucas "
        "use 0.5 with the true class; default: every image)",
    )
    compare_parser.add_argument(
        "--limit", type=positive_int, help="score a random subset of this many images"
    )
    compare_parser.add_argument(
        "--seed",
        type=int,
        help="seeds the random subset of --limit and the bootstrap intervals of the tables "
        "(default: 0): reproducible",
    )
    compare_parser.add_argument(
        "--workers",
        type=non_negative_int,
        default=2,
        help="processes that decode the images (default: 2; 0 decodes in the main process)",
    )
    compare_parser.add_argument(
        "--skip-unmatched",
        action="store_true",
        help="score the class folders that match a class of the model and list the others "
        "(default: refuse a data set with folders that match no class)",
    )
    compare_parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in the output folder: score only the images it has not scored "
        "yet, with its settings (options left out keep the run's values)",
    )
    for sub, name in ((explain_parser, "explain"), (compare_parser, "compare")):
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
            default=None if resumable else SCORES[0],
            help="how the model's outputs become the scores Y and O: softmax over the classes "
            "(the default, the papers'), sigmoid per label (a binary model with one output, "
            "multi-label models) or the raw outputs",
        )
        sub.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
        sub.add_argument(
            "--batch-size",
            type=positive_int,
            default=None if resumable else 8,
            help="default: 8",
        )
        sub.add_argument(
            "--threads",
            type=positive_int,
            help="torch threads per process (default: what torch picks; torchrun sets 1). "
            "Float32 sums depend on it: equal thread counts give equal tables. Recorded in "
            "the manifest",
        )
        sub.add_argument("-q", "--quiet", action="store_true", help="no progress bars or tables")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for any failure, 130 after Ctrl-C).

    Every failure, in the arguments or while running (an image Pillow refuses, a folder that
    cannot be written, a layer without a spatial output, a device torch cannot use...), is one
    line on stderr. Set the environment variable ``CAMPLUS_TRACEBACK=1`` to get the traceback.
    """
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
    """The one exit-status policy of every command: 0 when it returns, 130 after Ctrl-C, 2 for
    any failure. Our messages (bad input, a refused folder) are printed as written, anything
    else as one line with its type (its traceback with ``CAMPLUS_TRACEBACK=1``). Under
    ``torchrun`` only the first process speaks."""
    speaks = torchrun_place()[0] == 0
    try:
        command()
    except KeyboardInterrupt as stop:
        message = str(stop) if isinstance(stop, Interrupted) else f"{PROG}: interrupted"
        if speaks:
            print(f"\n{message}", file=sys.stderr)
        return INTERRUPTED
    except Exception as error:
        ours = isinstance(error, OUR_ERRORS)
        if os.environ.get("CAMPLUS_TRACEBACK") and not ours:
            raise
        if speaks:
            text = str(error).strip() if ours else one_line(error)
            print(f"{PROG}: error: {printable(text)}", file=sys.stderr)
        return USAGE_ERROR
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
