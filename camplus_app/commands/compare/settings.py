"""What decides a ``camplus compare`` run's results, and the checks that let ``--resume`` go on
only with the same settings, the same data and the run's own part files."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from camplus_app.datasets import ImageEntry, Listing
from camplus_app.runs import RunFolderError, csv_text, read_manifest, read_parts


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
    for key in ("threshold", "batch_size", "limit", "seed"):
        if getattr(args, key) is not None:
            given[key] = getattr(args, key)
    if args.skip_unmatched:
        given["skip_unmatched"] = True
    output = Path(args.output)
    for key, value in given.items():
        check_unchanged(previous, key, value, output)
    defaults = asdict(Settings(methods=parse_methods(None)))
    return Settings(**{**defaults, **(previous or {}), **given})


def check_unchanged(previous: dict[str, Any] | None, key: str, value: Any, output: Path) -> None:
    """Refuse an option given to ``--resume`` that differs from the run's."""
    if previous is not None and previous.get(key) != value:
        raise RunFolderError(
            f"cannot resume the run in {output} with {FLAGS[key]} {_shown(value)}: it was "
            f"started with {_shown(previous.get(key))}; leave the option out to keep the run's "
            "value, or start a new run in another folder (-o)"
        )


def check_same_settings(previous: dict[str, Any], settings: Settings, output: Path) -> None:
    """Refuse to resume a run whose manifest changed since its settings were read."""
    now = asdict(settings)
    if previous != now:
        changed = [k for k in now if previous.get(k) != now[k]]
        raise RunFolderError(
            f"cannot resume the run in {output}: its settings changed meanwhile "
            f"({', '.join(FLAGS.get(k, k) for k in changed)})"
        )


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return str(value)


def previous_settings(output: Path) -> dict[str, Any]:
    """The settings of the ``compare`` run in ``output``, to resume it."""
    manifest = read_manifest(output) if output.is_dir() else None
    if manifest is None:
        raise RunFolderError(f"nothing to resume in {output}: it holds no camplus run")
    if manifest["command"] != "compare":
        raise RunFolderError(f"{output} holds a camplus {manifest['command']} run, not compare")
    return dict(manifest["settings"])


def _data_argument(argument: str) -> str:
    """A path as an absolute path (so a resumed run finds it from anywhere); a name as is."""
    path = Path(argument)
    return str(path.resolve()) if path.exists() else argument


def listing_csv(entries: Sequence[ImageEntry], listing: Listing) -> str:
    """``dataset.csv``: the images of the run, by position."""
    rows = [
        {
            "position": position,
            "image": entry.name,
            "path": _relative(entry.path, listing.root),
            "label": "" if entry.label is None else entry.label,
        }
        for position, entry in enumerate(entries)
    ]
    return csv_text(rows)


def _relative(path: str | None, root: Path | None) -> str:
    if path is None:
        return ""
    if root is None:
        return path
    return Path(path).relative_to(root).as_posix()


def check_same_data(listing_file: Path, listing: str, output: Path) -> None:
    """Refuse to resume on data that changed since the run started."""
    before = listing_file.read_text() if listing_file.exists() else ""
    if before == listing:
        return
    old, new = before.splitlines(), listing.splitlines()
    pairs = enumerate(zip(old, new, strict=False))
    first = next((i for i, (a, b) in pairs if a != b), min(len(old), len(new)))
    raise RunFolderError(
        f"cannot resume the run in {output}: the data changed since it started ({len(old) - 1} "
        f"images then, {len(new) - 1} now; first difference at line {first + 1} of dataset.csv: "
        f"{(old[first : first + 1] or ['(nothing)'])[0]!r} then, "
        f"{(new[first : first + 1] or ['(nothing)'])[0]!r} now)"
    )


def batch_records(output: Path, batches: int) -> Iterator[dict[str, Any]]:
    """The part files' batch records, each batch once."""
    seen: set[int] = set()
    for record in read_parts(output):
        number = record.get("batch")
        if not isinstance(number, int) or not 0 <= number < batches:
            raise RunFolderError(f"a part file in {output} holds an unknown batch {number!r}")
        if number in seen:
            raise RunFolderError(
                f"batch {number} appears twice in the part files of {output}: two runs wrote "
                "into the folder; start a new run in another folder"
            )
        seen.add(number)
        yield record


def batch_positions(number: int, batch_size: int, images: int) -> range:
    """The positions of batch ``number``: always the same images for the same settings."""
    return range(number * batch_size, min((number + 1) * batch_size, images))


__all__ = [
    "FLAGS",
    "Settings",
    "batch_positions",
    "batch_records",
    "check_same_data",
    "check_same_settings",
    "check_unchanged",
    "listing_csv",
    "previous_settings",
    "settings_from",
]
