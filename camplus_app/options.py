"""The command line's shared pieces, below every command: the program name, where ``torchrun``
placed this process, and the parsing of the options several commands take (device, methods,
scores, output folder, integers and probabilities). How a command ends is in
:mod:`camplus_app.errors`."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from camplus_app.errors import UsageError, one_line
from camplus_app.textsafe import printable
from captum_camplus.utils import resolve_methods

PROG = "camplus"
#: How the CAM layer's tensor is read: as the model's attributes say (timm ViT tokens, Swin
#: channels last; every other layer channels first).
LAYOUT = "auto"


def torchrun_place() -> tuple[int, int, int]:
    """This process's rank, the number of processes and its local rank, as ``torchrun`` sets
    them in the environment (0, 1, 0 without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def parse_methods(text: str | None) -> list[str]:
    """Method display names from a comma-separated list (None: the default methods; ``all``:
    every registered one), by :func:`captum_camplus.utils.resolve_methods`."""
    names = None if text is None else [part.strip() for part in text.split(",") if part.strip()]
    if names == []:
        raise UsageError("--methods is empty: give at least one method")
    try:
        return resolve_methods(names)
    except ValueError as error:  # it names the unknown method
        raise UsageError(str(error)) from error


def parse_device(text: str | None) -> torch.device:
    """The ``--device``: a device this machine has and torch can use (default cuda if any)."""
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


def check_scores(scores: str, outputs: int, model: str) -> None:
    """Refuse ``--scores softmax`` for a model with one output per image before any scoring:
    its softmax is 1 for every image (:func:`metrics.confidence.check_score_kind`)."""
    if scores == "softmax" and outputs == 1:
        raise UsageError(
            f"{model} has one output per image (a binary classifier), whose softmax is 1 for "
            "every image: pass --scores sigmoid (the probability of the positive class) or "
            "--scores raw (the logit)"
        )


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


def int_at_least(minimum: int) -> Callable[[str], int]:
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


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def probability(text: str) -> float:
    """An argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def write(line: str) -> None:
    """Print a line without breaking a progress bar on the terminal (an undecodable file name
    with its bytes as ``\\xHH``, :func:`~camplus_app.textsafe.printable`)."""
    tqdm.write(printable(line))


__all__ = [
    "LAYOUT",
    "PROG",
    "check_scores",
    "int_at_least",
    "non_negative_int",
    "output_path",
    "parse_device",
    "parse_methods",
    "positive_int",
    "probability",
    "torchrun_place",
    "write",
]
