"""The integrity of a ``camplus compare`` run's part files: each batch once, holding the images
of its batch with the values the tables read, scored with the run's settings."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from camplus_app.parts import read_located_parts
from camplus_app.runs import RunFolderError

from .settings import Settings, batch_positions, describe_changes, setting_changes


def batch_records(output: Path, settings: Settings, images: int) -> Iterator[dict[str, Any]]:
    """The part files' batch records, each batch once, each checked to hold the images of its
    batch, scored with the run's settings (a changed ``batch_size`` would mix batches).

    Raises:
        RunFolderError: naming the file and line of the first record that is not so.
    """
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
        then = record.get("settings")
        if not isinstance(then, dict):
            raise RunFolderError(f"{where} is damaged: it does not record its settings")
        changes = setting_changes(then, now)
        if changes:
            raise RunFolderError(
                f"{where}: batch {number} was scored with other settings "
                f"({describe_changes(then, now, changes)}): was manifest.json edited? Restore "
                "it, or start again with --overwrite"
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


__all__ = ["batch_records", "check_record"]
