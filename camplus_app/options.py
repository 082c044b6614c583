"""The command line's shared pieces, below every command: the program name, where ``torchrun``
placed this process, and the parsing of the options several commands take (device, methods,
scores, output folder, integers and probabilities). How a command ends is in
:mod:`camplus_app.errors`."""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from camplus_app.errors import UsageError, one_line
from camplus_app.textsafe import printable
from captum_camplus.layouts import LayoutSpec, TokenLayout
from captum_camplus.utils import resolve_methods

PROG = "camplus"
#: The default ``--layout``: the one reading of the CAM layer's tensor that something confirms
#: (:class:`captum_camplus.layouts.AutoLayout`).
LAYOUT = "auto"
#: The ``--layout`` spellings, for help and errors.
LAYOUT_SYNTAX = "auto, none, channels_first, channels_last, tokens, tokens:P or tokens:P:HxW"
_NAMED_LAYOUTS = ("auto", "channels_first", "channels_last", "tokens")
_TOKENS = re.compile(r"tokens:(\d+)(?::(\d+)x(\d+))?")


def parse_layout(text: str) -> LayoutSpec:
    """The core's ``layout=`` for a ``--layout``: ``none`` is ``None`` (Captum's channels-first
    reading, checked), ``tokens:P`` a :class:`TokenLayout` with ``P`` prefix tokens and the grid
    from the input, ``tokens:P:HxW`` one with an ``H x W`` grid; the names as they are."""
    word = text.strip().lower()
    if word == "none":
        return None
    if word in _NAMED_LAYOUTS:
        return word
    match = _TOKENS.fullmatch(word)
    if match is None:
        raise UsageError(
            f"--layout {text!r} is not a layout: choose {LAYOUT_SYNTAX} (P prefix tokens before "
            "an H x W patch grid, e.g. tokens:1:14x14 for a ViT-B/16 at 224 x 224)"
        )
    prefix, height, width = match.groups()
    if height is None:
        return TokenLayout(int(prefix))
    if int(height) < 1 or int(width) < 1:
        raise UsageError(f"--layout {text!r}: the grid H x W must be positive, e.g. tokens:1:14x14")
    return TokenLayout(int(prefix), (int(height), int(width)))


def layout_option(spec: LayoutSpec) -> str:
    """The ``--layout`` spelling of a layout :func:`parse_layout` gives (its inverse)."""
    if spec is None:
        return "none"
    if isinstance(spec, TokenLayout):
        grid = "" if spec.grid is None else ":" + "x".join(map(str, spec.grid))
        return f"tokens:{spec.prefix_tokens}{grid}"
    if isinstance(spec, str):
        return spec
    raise TypeError(f"no --layout spelling for {spec!r}")


_NAME = "auto|channels_first|channels_last|tokens"
#: What the core's messages name as ``layout=``: a TokenLayout with numbers (group 1-3), a
#: TokenLayout in words (``prefix_tokens=..., grid=...`` or ``prefix_tokens, grid``), a name
#: (group 4: ``layout='auto'``, or quoted after one such as ``(or 'auto')``), ``layout=None``,
#: and a bare ``layout=`` (the option in general).
_SELECTORS = re.compile(
    r"(?:layout=)?TokenLayout\(prefix_tokens=(\d+), grid=(?:\((\d+), (\d+)\)|None)\)"
    r"|(?P<words>(?:layout=)?TokenLayout\(prefix_tokens(?:=\.\.\., grid=\.\.\.|, grid)\))"
    rf"|(?:layout=|(?<=\(or )|(?<=, ))'({_NAME})'"
    r"|layout=None"
    r"|layout=(?=[\s,.;)]|$)"
)


def with_layout_options(message: str) -> str:
    """A core message with the ``--layout`` that matches each ``layout=`` it names (the core
    knows no command line): ``layout='channels_last' (--layout channels_last)``; a
    ``TokenLayout`` in words gets ``--layout tokens:P:HxW``, a bare ``layout=`` ``--layout``."""

    def spelled(match: re.Match[str]) -> str:
        prefix, height, width, words, name = match.groups()
        text = match.group(0)
        if words is not None:
            option = " tokens:P:HxW"
        elif prefix is not None:
            grid = "" if height is None else f":{height}x{width}"
            option = f" tokens:{prefix}{grid}"
        elif name is not None:
            option = f" {name}"
        elif text == "layout=None":
            option = " none"
        else:  # a bare layout=
            option = " LAYOUT"
        return f"{text} (--layout{option})"

    return _SELECTORS.sub(spelled, message)


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
    "LAYOUT_SYNTAX",
    "PROG",
    "check_scores",
    "int_at_least",
    "layout_option",
    "non_negative_int",
    "output_path",
    "parse_device",
    "parse_layout",
    "parse_methods",
    "positive_int",
    "probability",
    "torchrun_place",
    "with_layout_options",
    "write",
]
