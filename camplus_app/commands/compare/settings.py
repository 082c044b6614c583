"""What decides a ``camplus compare`` run's results, and the checks that let ``--resume`` go on
only with the same settings, the same data and the run's own part files."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from camplus_app.datasets import ImageEntry, Listing, data_change, listing_rows
from camplus_app.runs import (
    RunFolderError,
    csv_text,
    read_located_parts,
    read_parts,
    run_manifest,
)


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
    scores: str = "softmax"  #: ``--scores``: how the outputs become Y and O


#: Settings added since the first runs, with the value those runs had: a run without them
#: resumes with that value.
EARLIER = {"scores": "softmax"}

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
    for key in ("threshold", "batch_size", "limit", "seed", "scores"):
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
    previous = {**EARLIER, **previous}
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
    """The settings of the ``compare`` run in ``output``, to resume it (from the manifest's
    copy if ``manifest.json`` is damaged)."""
    manifest = run_manifest(output) if output.is_dir() else None
    if manifest is None:
        raise RunFolderError(f"nothing to resume in {output}: it holds no camplus run")
    if manifest["command"] != "compare":
        raise RunFolderError(f"{output} holds a camplus {manifest['command']} run, not compare")
    return {**EARLIER, **manifest["settings"]}


def _data_argument(argument: str) -> str:
    """A path as an absolute path (so a resumed run finds it from anywhere); a name as is."""
    path = Path(argument)
    return str(path.resolve()) if path.exists() else argument


def listing_csv(entries: Sequence[ImageEntry], listing: Listing) -> str:
    """``dataset.csv``: the images of the run by position, each with its content's fingerprint
    (:func:`~camplus_app.datasets.listing_rows`)."""
    return csv_text(listing_rows(entries, listing.root))


def listing_digest(listing: str) -> str:
    """The identity of a run's data: a hash of its ``dataset.csv`` rows, file times left out
    (a copied data set is the same data; a byte changed in one image is not)."""
    digest = hashlib.blake2b(digest_size=16)
    for row in csv.DictReader(io.StringIO(listing)):
        row.pop("mtime_ns", None)
        digest.update(json.dumps(row, sort_keys=True).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def check_same_data(previous: dict[str, Any], listing: str, output: Path) -> None:
    """Refuse to resume on data that changed since the run started: other images, or other
    bytes in one (in the batches scored and in those left), named with what changed. The
    manifest's ``data`` digest decides; without it (a run killed before it was recorded),
    ``dataset.csv`` does, and a folder where nothing was scored yet goes on."""
    listing_file = output / "dataset.csv"
    before = listing_file.read_text(errors="replace") if listing_file.exists() else None
    if previous.get("data") == listing_digest(listing):
        return
    change = data_change(before, listing) if before is not None else None
    if previous.get("data") is None:
        if before is None and next(read_parts(output), None) is None:
            return  # killed before the listing was written: nothing scored, nothing to mix
        if before is not None and change is None:
            return
    what = change or "its images differ from those it recorded, and dataset.csv is missing"
    raise RunFolderError(
        f"cannot resume the run in {output}: the data changed since it started: {what}; "
        "restore the data, or start again with --overwrite (or in another folder)"
    )


def batch_records(output: Path, settings: Settings, images: int) -> Iterator[dict[str, Any]]:
    """The part files' batch records, each batch once, each checked to hold the images of its
    batch, scored with the run's settings (a changed ``batch_size`` would mix batches)."""
    now = asdict(settings)
    batches = -(-images // settings.batch_size)
    seen: set[int] = set()
    for where, record in read_located_parts(output):
        number = record.get("batch")
        if not isinstance(number, int) or not 0 <= number < batches:
            raise RunFolderError(
                f"{where} holds an unknown batch {number!r} (the run has {batches} batches of "
                f"{settings.batch_size}): was manifest.json edited? Restore it, or start again "
                "with --overwrite"
            )
        if number in seen:
            raise RunFolderError(
                f"batch {number} appears twice in the part files of {output} ({where}): two "
                "runs wrote into the folder; start a new run in another folder"
            )
        then = record.get("settings", now)  # runs of earlier versions did not record them
        then = {**EARLIER, **then} if isinstance(then, dict) else {}
        changed = [key for key in now if then.get(key) != now[key]]
        if changed:
            shown = ", ".join(
                f"{FLAGS.get(k, k)} {_shown(then.get(k))} then, {_shown(now[k])} now"
                for k in changed
            )
            raise RunFolderError(
                f"{where}: batch {number} was scored with other settings ({shown}): was "
                "manifest.json edited? Restore it, or start again with --overwrite"
            )
        check_record(where, record, batch_positions(number, settings.batch_size, images), now)
        seen.add(number)
        yield record


def check_record(
    where: str, record: dict[str, Any], positions: range, settings: dict[str, Any]
) -> None:
    """Raise :class:`RunFolderError` naming ``where`` unless ``record`` holds one row per image
    of its batch (``positions``), each with the values the tables read."""
    images = record.get("images")
    if not isinstance(images, list) or not all(isinstance(row, dict) for row in images):
        raise RunFolderError(f"{where} is damaged: its images are not a list of records")
    found = [row.get("position") for row in images]
    if found != list(positions):
        raise RunFolderError(
            f"{where} is damaged: batch {record['batch']} holds the images at positions "
            f"{found}, not {positions.start} to {positions.stop - 1}"
        )
    methods = set(settings["methods"])
    for row in images:
        if "error" in row:
            continue
        needed = ["target", "Y", "log Y", "kept"] + (["O", "log O"] if row.get("kept") else [])
        missing = [key for key in needed if key not in row]
        missing += [
            f"{key} of every method"
            for key in ("O", "log O")
            if key in row
            and not (
                isinstance(row[key], dict)
                and all(isinstance(v, dict) and methods <= set(v) for v in row[key].values())
            )
        ]
        if missing:
            raise RunFolderError(
                f"{where} is damaged: the image at position {row['position']} lacks "
                f"{', '.join(missing)}"
            )


def batch_positions(number: int, batch_size: int, images: int) -> range:
    """The positions of batch ``number``: always the same images for the same settings."""
    return range(number * batch_size, min((number + 1) * batch_size, images))


__all__ = [
    "EARLIER",
    "FLAGS",
    "Settings",
    "batch_positions",
    "batch_records",
    "check_same_data",
    "check_same_settings",
    "check_record",
    "check_unchanged",
    "listing_csv",
    "listing_digest",
    "previous_settings",
    "settings_from",
]
