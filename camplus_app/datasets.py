"""The images of ``camplus compare``, listed up front and decoded lazily by DataLoader workers.

Three kinds of data:

- a folder of class folders (``imagenet/val/n01440764/*.JPEG``): each folder is a class, named
  by an ImageNet synset id, a class index or a class name of the model (``_`` for spaces), and
  its images are labelled with that class;
- image files and flat folders of images, or bundled photographs by name: no labels;
- nothing: the bundled photographs.

>>> listing = find_images(["imagenet/val"], classifier)    # ImageNet-style class folders
>>> listing.entries[0]                                     # ImageEntry(name, path, label)
>>> dataset = ImageDataset(listing.entries, classifier.transform)
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from camplus_app.errors import first_line
from camplus_app.images import (
    IMAGE_SUFFIXES,
    SAMPLE_IMAGES,
    UnreadableImage,
    name_images,
    read_image,
    unique_name,
)

if TYPE_CHECKING:
    from PIL.Image import Image

    from camplus_app.zoo import Classifier

_SYNSET = re.compile(r"n\d{8}")


class ImageEntry(NamedTuple):
    """One image of the data: its unique name, where it is, and its true class if labelled."""

    name: str  #: shown in the tables: a file stem, ``class/file`` or a bundled name
    path: str | None  #: the file; None for a bundled photograph
    label: int | None  #: the true class, from its class folder
    bundled: str | None = None  #: a bundled photograph's key, if not ``name`` (``coffee-2``)


@dataclass
class Listing:
    """What :func:`find_images` found."""

    kind: str  #: "class folders", "images" or "bundled photographs"
    entries: list[ImageEntry]
    root: Path | None = None  #: the class-folder data set's folder
    classes: dict[str, int] = field(default_factory=dict)  #: class folder -> class index
    unmatched: dict[str, str] = field(default_factory=dict)  #: skipped folder -> why
    #: files of the class folders that are not read, relative to ``root`` -> why
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def labelled(self) -> bool:
        return self.kind == "class folders"


def find_images(
    arguments: Sequence[str | Path], classifier: Classifier, skip_unmatched: bool = False
) -> Listing:
    """List the images named on the command line (nothing is decoded here).

    One folder whose sub-folders hold the images is a class-folder data set; files, flat
    folders and bundled names are unlabelled images; no argument means the bundled photographs.

    Raises:
        ValueError: class folders that match no class of the model (unless ``skip_unmatched``,
            and always if none matches), a folder without images, a mix of a class-folder data
            set with other arguments.
        FileNotFoundError: a path that does not exist.
    """
    if not arguments:
        names = list(SAMPLE_IMAGES)
        return Listing("bundled photographs", [ImageEntry(n, None, None) for n in names])
    folders = [Path(a) for a in arguments if Path(a).is_dir() and is_class_folder_set(Path(a))]
    if folders:
        if len(arguments) > 1:
            raise ValueError(
                f"{folders[0]} is a data set of class folders; give it alone, not with other "
                "images or folders"
            )
        return _class_folders(folders[0], classifier, skip_unmatched)
    entries = [
        ImageEntry(name, str(source), None)
        if isinstance(source, Path)
        else ImageEntry(name, None, None, None if source == name else source)
        for name, source in name_images(arguments)
    ]
    return Listing("images", entries)


def is_class_folder_set(folder: Path) -> bool:
    """A folder with sub-folders and no image files of its own."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    has_images = any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in entries)
    return not has_images and any(p.is_dir() for p in entries)


def folder_class(name: str, classifier: Classifier) -> int:
    """The class a folder name stands for: an ImageNet synset id (for a 1000-class model), a
    class index, or a class name (case-insensitive, ``_`` for spaces).

    Raises:
        ValueError: no class, or several, match.
    """
    if _SYNSET.fullmatch(name) and len(classifier.categories) == 1000:
        synsets = imagenet_synsets()
        if name not in synsets:
            raise ValueError(f"{name} is not an ImageNet-1k synset id")
        return synsets.index(name)
    return classifier.class_index(name.replace("_", " "))


def imagenet_synsets() -> list[str]:
    """The 1000 ImageNet-1k synset ids in class-index order (shipped with timm, no download)."""
    from timm.data import ImageNetInfo

    return list(ImageNetInfo().label_names())


def _class_folders(root: Path, classifier: Classifier, skip_unmatched: bool) -> Listing:
    listing = Listing("class folders", [], root=root)
    taken: set[str] = set()
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = []
        for path in sorted(folder.rglob("*")):
            why = _not_read(path)
            if why is None:
                files.append(path)
            elif why:
                listing.skipped[path.relative_to(root).as_posix()] = why
        if not files:
            continue
        try:
            label = folder_class(folder.name, classifier)
        except ValueError as error:
            listing.unmatched[folder.name] = str(error)
            continue
        listing.classes[folder.name] = label
        for file in files:  # a.jpg and a.png in one folder: cat/a and cat/a-2
            name = unique_name(file.relative_to(root).with_suffix("").as_posix(), taken)
            taken.add(name)
            listing.entries.append(ImageEntry(name, str(file), label))
    if listing.unmatched and (not skip_unmatched or not listing.classes):
        shown = "; ".join(f"{n}: {why}" for n, why in list(listing.unmatched.items())[:5])
        more = len(listing.unmatched) - 5
        count = f"{len(listing.unmatched)} of {len(listing.unmatched) + len(listing.classes)}"
        hint = (
            "name class folders by ImageNet synset id, class index or class name"
            if not listing.classes
            else "pass --skip-unmatched to score the other folders"
        )
        raise ValueError(
            f"{count} class folders of {root} match no class of {classifier.name} "
            f"({shown}{f'; and {more} more' if more > 0 else ''}): {hint}"
        )
    if not listing.entries:
        suffixes = ", ".join(IMAGE_SUFFIXES)
        raise ValueError(f"the class folders of {root} hold no images ({suffixes})")
    return listing


def _not_read(path: Path) -> str | None:
    """Why a file of a class folder is not read ("" for folders and hidden files), or None."""
    if path.name.startswith("."):
        return ""
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except (RuntimeError, OSError) as error:  # RuntimeError: a loop, Python < 3.13
            loops = isinstance(error, RuntimeError) or "loop" in str(error).lower()
            return "a symbolic link that loops" if loops else "a symbolic link to nothing"
        if path.is_dir():
            return "a symbolic link to a folder (not followed)"
    if path.is_dir():
        return ""
    if not path.is_file():
        return "not a regular file"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image by its name ({', '.join(IMAGE_SUFFIXES)})"
    return None


class Fingerprint(NamedTuple):
    """What identifies a file's content cheaply: its size, modification time and a hash of its
    bytes (BLAKE2b, 128 bits). The hash decides; size and time say what changed."""

    size: int
    mtime_ns: int
    blake2b: str

    @classmethod
    def of(cls, path: str | Path) -> Fingerprint:
        """Raises OSError if the file cannot be read."""
        with open(path, "rb") as file:
            status = os.fstat(file.fileno())
            digest = hashlib.file_digest(file, lambda: hashlib.blake2b(digest_size=16))
        return cls(status.st_size, status.st_mtime_ns, digest.hexdigest())


def listing_rows(entries: Sequence[ImageEntry], root: Path | None) -> list[dict[str, object]]:
    """The rows of a run's ``dataset.csv``: per image its position, name, file (relative to a
    class-folder data set's ``root``), label and :class:`Fingerprint` (blank for a bundled
    photograph, or a file that cannot be read: it is reported when it is decoded)."""
    rows: list[dict[str, object]] = []
    for position, entry in enumerate(entries):
        fingerprint: tuple[object, ...] = ("", "", "")
        if entry.path is not None:
            # unreadable: reported with its error when it is decoded, like any bad file
            with contextlib.suppress(OSError):
                fingerprint = Fingerprint.of(entry.path)
        path = entry.path or ""
        if entry.path is not None and root is not None:
            path = Path(entry.path).relative_to(root).as_posix()
        rows.append(
            {
                "position": position,
                "image": entry.name,
                "path": path,
                "label": "" if entry.label is None else entry.label,
                **dict(zip(Fingerprint._fields, fingerprint, strict=True)),
            }
        )
    return rows


def data_change(before: str, now: str) -> str | None:
    """What differs between two ``dataset.csv`` texts, in words, or None if the same images
    with the same content (the hash decides; a new modification time alone is no change)."""
    old, new = (list(csv.DictReader(io.StringIO(text))) for text in (before, now))
    for row_then, row_now in zip(old, new, strict=False):
        where = f"image {row_now['position']}"
        if (row_then.get("image"), row_then.get("path")) != (row_now["image"], row_now["path"]):
            return (
                f"{where} is {row_now['path'] or row_now['image']!r} now, "
                f"{row_then.get('path') or row_then.get('image')!r} then (images added, removed "
                "or renamed)"
            )
        if row_then.get("label") != row_now["label"]:
            label_then = row_then.get("label")
            return f"{where} ({row_now['path']}) has label {row_now['label']}, {label_then} then"
        if row_then.get("blake2b") != row_now["blake2b"]:
            size = (
                f"size {row_then.get('size')} then, {row_now['size']} bytes now"
                if row_then.get("size") != row_now["size"]
                else f"same size, {row_now['size']} bytes"
            )
            return f"{where} ({row_now['path'] or row_now['image']}) has other content now ({size})"
    if len(old) != len(new):
        return f"{len(old)} images then, {len(new)} now"
    return None


def select(count: int, limit: int | None, seed: int) -> list[int]:
    """Positions of a reproducible random subset of ``limit`` of ``count`` images, in order
    (all of them without a limit)."""
    if limit is None or limit >= count:
        return list(range(count))
    chosen = np.random.default_rng(seed).permutation(count)[:limit]
    return sorted(int(i) for i in chosen)


class Item(NamedTuple):
    """One decoded image, or why it could not be decoded."""

    position: int
    image: Tensor | None
    error: str | None


class ImageDataset(Dataset):
    """The entries, decoded and preprocessed on access (in DataLoader workers): a file that
    cannot be decoded (:class:`~camplus_app.images.UnreadableImage`) gives an :class:`Item`
    with the error instead of stopping the run; any other error stops it."""

    def __init__(self, entries: Sequence[ImageEntry], transform: Callable[[Image], Tensor]):
        self.entries = list(entries)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, position: int) -> Item:
        entry = self.entries[position]
        if entry.path is None:
            image = SAMPLE_IMAGES[entry.bundled or entry.name]()
        else:
            try:
                image = read_image(entry.path)
            except UnreadableImage as error:  # reported by path and counted, not hidden
                return Item(position, None, first_line(str(error)))
        # anything else (a bug in the transform, no memory) is a failure of the run
        return Item(position, self.transform(image), None)


class Batch(NamedTuple):
    """A batch as the scorer takes it, and the images of it that could not be read."""

    positions: Tensor  #: (K,) of the readable images
    images: Tensor | None  #: (K, C, H, W), None if none was readable
    failed: list[tuple[int, str]]  #: (position, error) of the unreadable ones


def collate(items: Sequence[Item]) -> Batch:
    """Stack the readable images of a batch; keep the errors of the others."""
    good = [item for item in items if item.image is not None]
    failed = [(item.position, str(item.error)) for item in items if item.image is None]
    positions = torch.tensor([item.position for item in good], dtype=torch.long)
    images = torch.stack([item.image for item in good]) if good else None  # type: ignore[misc]
    return Batch(positions, images, failed)


__all__ = [
    "Batch",
    "ImageDataset",
    "Fingerprint",
    "ImageEntry",
    "Item",
    "Listing",
    "collate",
    "data_change",
    "listing_rows",
    "find_images",
    "folder_class",
    "imagenet_synsets",
    "is_class_folder_set",
    "select",
]
