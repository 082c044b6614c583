"""The identity of a ``camplus compare`` run's data: ``dataset.csv``, its digest, and the check
that lets ``--resume`` go on only with the images the run started with."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from camplus_app.datasets import ImageEntry, Listing, data_change, listing_rows
from camplus_app.parts import read_parts
from camplus_app.runs import RunFolderError
from camplus_app.textsafe import csv_text, printable


def listing_csv(entries: Sequence[ImageEntry], listing: Listing) -> str:
    """``dataset.csv``: the images of the run by position, each with its content's fingerprint
    (:func:`~camplus_app.datasets.listing_rows`)."""
    return csv_text(listing_rows(entries, listing.root, listing.fingerprints))


def classes_csv(listing: Listing) -> str:
    """``classes.csv``: every folder of a class-folder data set, the class it was read as,
    how it matched, its image count, and why it is not scored or what it was merged with."""
    return csv_text(
        [
            {
                "folder": row.folder,
                "class index": row.class_index,
                "class name": row.class_name,
                "matched by": row.matched,
                "images": row.images,
                "note": row.note,
            }
            for row in listing.folders
        ]
    )


def class_mapping(listing: Listing) -> dict[str, int | None]:
    """Each class folder -> the class it was read as (None: not scored), for ``--resume``."""
    return {printable(row.folder): listing.classes.get(row.folder) for row in listing.folders}


def check_same_classes(previous: dict[str, Any], listing: Listing, output: Path) -> None:
    """Refuse to resume a run whose class folders would now be read as other classes (the
    model's labels edited, a folder emptied or matched now), naming the folders. A run
    recorded before the mapping was goes on (its labels are checked with its data)."""
    then = previous.get("classes")
    if not isinstance(then, dict):
        return
    now = class_mapping(listing)
    # a folder added or removed adds or removes images: the data check names them
    changed = [name for name in then if name in now and then[name] != now[name]]
    if changed:
        shown = "; ".join(
            f"{name}: {_read_as(then, name)} then, {_read_as(now, name)} now"
            for name in changed[:5]
        )
        more = f"; and {len(changed) - 5} more" if len(changed) > 5 else ""
        raise RunFolderError(
            f"cannot resume the run in {output}: its class folders would now be read as other "
            f"classes ({shown}{more}); restore the folders and the model's labels, or start "
            "again with --overwrite (or in another folder)"
        )


def _read_as(mapping: dict[str, Any], name: str) -> str:
    return "not scored" if mapping[name] is None else f"class {mapping[name]}"


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


__all__ = [
    "check_same_classes",
    "check_same_data",
    "class_mapping",
    "classes_csv",
    "listing_csv",
    "listing_digest",
]
