"""What decides a ``camplus compare`` run's results, and the checks that let ``--resume`` go on
only with the same settings. One comparison (:func:`setting_changes`) serves every check: an
option given to ``--resume``, the manifest read again under the lock, and each part-file record
(:mod:`.integrity`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from camplus_app.errors import UsageError
from camplus_app.options import LAYOUT, layout_option, parse_layout
from camplus_app.runs import RunFolderError, run_manifest
from captum_camplus.layouts import LayoutSpec
from metrics.choices import PAPERS, parse_metrics, refused_metrics
from metrics.confidence import ScoreKind


@dataclass
class Settings:
    """What decides a run's results; a resumed run keeps every one of them."""

    data: list[str] = field(default_factory=list)  #: paths (absolute) or bundled names
    model: str | None = None
    weights: str | None = None
    layer: str | None = None
    methods: list[str] = field(default_factory=list)
    threshold: float | None = None
    target: int | None = None
    batch_size: int = 8
    limit: int | None = None
    seed: int = 0
    skip_unmatched: bool = False
    scores: ScoreKind = "softmax"  #: ``--scores``: how the outputs become Y and O
    merge_classes: bool = False  #: ``--merge-classes``: folders of one class are one class
    keep_duplicates: bool = False  #: ``--keep-duplicates``: files with the same bytes scored
    #: ``--metrics``: the papers' and the chosen perturbation metrics (:mod:`metrics.choices`)
    metrics: list[str] = field(default_factory=lambda: [PAPERS])
    #: ``--layout``, as spelled on the command line (:func:`camplus_app.options.parse_layout`)
    layout: str = LAYOUT

    @property
    def layout_spec(self) -> LayoutSpec:
        """The core's ``layout=`` for :attr:`layout`."""
        return parse_layout(self.layout)


#: The option that sets each setting, for messages.
FLAGS = {
    "data": "DATA",
    "model": "--model",
    "weights": "--weights",
    "layer": "--layer",
    "methods": "--methods",
    "threshold": "--threshold",
    "target": "--target",
    "batch_size": "--batch-size",
    "limit": "--limit",
    "seed": "--seed",
    "skip_unmatched": "--skip-unmatched",
    "scores": "--scores",
    "merge_classes": "--merge-classes",
    "keep_duplicates": "--keep-duplicates",
    "metrics": "--metrics",
    "layout": "--layout",
}
#: Settings added after runs were recorded without them, with the value those runs had.
LATER = {
    "merge_classes": False,
    "keep_duplicates": False,
    "metrics": [PAPERS],
    "layout": LAYOUT,
}


def settings_from(
    args: argparse.Namespace,
    previous: dict[str, Any] | None,
    parse_methods: Callable[[str | None], list[str]],
) -> Settings:
    """The run's settings: the options given, the resumed run's for the others, else the
    defaults. A given option that differs from the resumed run's is refused."""
    given: dict[str, Any] = {}
    if args.images:
        given["data"] = [_data_argument(a) for a in args.images]
    if args.model is not None:
        given["model"] = args.model
    if args.weights is not None:
        given["weights"] = str(Path(args.weights).resolve())
    if args.layer is not None:
        given["layer"] = args.layer
    if args.methods is not None:
        given["methods"] = parse_methods(args.methods)
    if args.layout is not None:
        given["layout"] = layout_option(parse_layout(args.layout))  # one spelling per layout
    if getattr(args, "metrics", None) is not None:
        given["metrics"] = _metrics(args.metrics)
    for key in ("threshold", "batch_size", "limit", "seed", "scores"):
        if getattr(args, key) is not None:
            given[key] = getattr(args, key)
    for key in ("skip_unmatched", "merge_classes", "keep_duplicates"):
        if getattr(args, key, False):
            given[key] = True
    output = Path(args.output)
    for key, value in given.items():
        check_unchanged(previous, key, value, output)
    defaults = asdict(Settings(methods=parse_methods(None)))
    return Settings(**{**defaults, **(previous or {}), **given})


def setting_changes(then: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The settings that differ between two records of them (either may lack one; one of
    :data:`LATER` that a record lacks has the value runs had before it)."""
    then, now = {**LATER, **then}, {**LATER, **now}
    return [key for key in {**then, **now} if then.get(key) != now.get(key)]


def describe_changes(then: Mapping[str, Any], now: Mapping[str, Any], keys: list[str]) -> str:
    """``--batch-size 2 then, 3 now, ...``: the changed ``keys`` by their options."""
    return ", ".join(
        f"{FLAGS.get(key, key)} {_shown(then.get(key))} then, {_shown(now.get(key))} now"
        for key in keys
    )


def check_unchanged(previous: dict[str, Any] | None, key: str, value: Any, output: Path) -> None:
    """Refuse an option given to ``--resume`` that differs from the run's."""
    if previous is None:
        return
    # a setting of LATER that the run lacks has the value runs had before it
    then = {key: previous[key]} if key in previous else {}
    if setting_changes(then, {key: value}):
        raise RunFolderError(
            f"cannot resume the run in {output} with {FLAGS[key]} {_shown(value)}: it was "
            f"started with {_shown({**LATER, **then}.get(key))}; leave the option out to keep "
            "the run's value, or start a new run in another folder (-o)"
        )


def check_same_settings(previous: dict[str, Any], settings: Settings, output: Path) -> None:
    """Refuse to resume a run whose manifest changed since its settings were read."""
    now = asdict(settings)
    changes = setting_changes(previous, now)
    if changes:
        raise RunFolderError(
            f"cannot resume the run in {output}: its settings changed meanwhile "
            f"({describe_changes(previous, now, changes)})"
        )


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return str(value)


def _metrics(text: str) -> list[str]:
    try:
        return parse_metrics(text)
    except ValueError as error:
        raise UsageError(f"--metrics: {error}") from error


def check_metrics(settings: Settings) -> None:
    """Refuse, before anything is scored, a chosen metric that the run's scores leave
    undefined."""
    refused = refused_metrics(settings.metrics, settings.scores)
    if refused:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in refused.items())
        raise UsageError(
            f"--metrics {','.join(refused)} is not defined under --scores {settings.scores} "
            f"({reasons}); use --scores softmax or sigmoid, or leave these metrics out"
        )


def previous_settings(output: Path) -> dict[str, Any]:
    """The settings of the ``compare`` run in ``output``, to resume it (from the manifest's
    backup if ``manifest.json`` is damaged)."""
    manifest = run_manifest(output) if output.is_dir() else None
    if manifest is None:
        raise RunFolderError(f"nothing to resume in {output}: it holds no camplus run")
    if manifest["command"] != "compare":
        raise RunFolderError(f"{output} holds a camplus {manifest['command']} run, not compare")
    return dict(manifest["settings"])


def _data_argument(argument: str) -> str:
    """A path as an absolute path (so a resumed run finds it from anywhere); a name as is."""
    path = Path(argument)
    return str(path.resolve()) if path.exists() else argument


def batch_positions(number: int, batch_size: int, images: int) -> range:
    """The positions of batch ``number``: always the same images for the same settings."""
    return range(number * batch_size, min((number + 1) * batch_size, images))


__all__ = [
    "FLAGS",
    "LATER",
    "Settings",
    "batch_positions",
    "check_metrics",
    "check_same_settings",
    "check_unchanged",
    "describe_changes",
    "previous_settings",
    "setting_changes",
    "settings_from",
]
