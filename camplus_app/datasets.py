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
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from camplus_app.duplicates import groups, near_duplicates
from camplus_app.errors import first_line
from camplus_app.images import (
    IMAGE_SUFFIXES,
    SAMPLE_IMAGES,
    UnreadableImage,
    name_images,
    read_image,
    unique_name,
)
from camplus_app.labels import (
    FolderMatch,
    FolderNameError,
    ModelClasses,
    imagenet_synsets,
    shown_name,
)

if TYPE_CHECKING:
    from PIL.Image import Image

    from camplus_app.zoo import Classifier


class ImageEntry(NamedTuple):
    """One image of the data: its unique name, where it is, and its true class if labelled."""

    name: str  #: shown in the tables: a file stem, ``class/file`` or a bundled name
    path: str | None  #: the file; None for a bundled photograph
    label: int | None  #: the true class, from its class folder
    bundled: str | None = None  #: a bundled photograph's key, if not ``name`` (``coffee-2``)


class FolderRow(NamedTuple):
    """One folder of a class-folder data set as it was read: a row of ``classes.csv``."""

    folder: str
    class_index: int | None  #: the class it was read as (None: matched nothing, or empty)
    class_name: str | None
    matched: str  #: how (:data:`~camplus_app.labels.SYNSET`...), "" if not matched
    images: int  #: image files listed in it
    note: str  #: "", or why it is not scored, or what it was merged with


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
    source: str = ""  #: what the folder names were read through (the model's labels...)
    folders: list[FolderRow] = field(default_factory=list)  #: every folder, in sorted order
    empty: list[str] = field(default_factory=list)  #: class folders without an image file
    hidden: list[str] = field(default_factory=list)  #: hidden files and folders, not read
    merged: dict[int, list[str]] = field(default_factory=dict)  #: class -> its folders
    #: the file scored -> files with the same bytes, not scored (relative to ``root``)
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    keep_duplicates: bool = False  #: ``--keep-duplicates``: the duplicates are scored too
    near_duplicates: list[list[str]] = field(default_factory=list)  #: same average hash
    fingerprints: dict[str, Fingerprint] = field(default_factory=dict)  #: by entry path

    @property
    def labelled(self) -> bool:
        return self.kind == "class folders"

    def relative(self, path: str) -> str:
        return Path(path).relative_to(self.root).as_posix() if self.root else path


def find_images(
    arguments: Sequence[str | Path],
    classifier: Classifier,
    skip_unmatched: bool = False,
    merge_classes: bool = False,
    keep_duplicates: bool = False,
) -> Listing:
    """List the images named on the command line (nothing is decoded here).

    One folder whose sub-folders hold the images is a class-folder data set (its folder names
    read by :class:`~camplus_app.labels.ModelClasses`, its files with the same bytes scored
    once unless ``keep_duplicates``); files, flat folders and bundled names are unlabelled
    images; no argument means the bundled photographs.

    Raises:
        ValueError: class folders that match no class of the model (unless ``skip_unmatched``,
            and always if none matches), two folders of one class (unless ``merge_classes``),
            folder names that look alike, one picture in two classes (unless
            ``keep_duplicates``), a folder without images, a mix of a class-folder data set
            with other arguments.
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
        listing = _class_folders(folders[0], classifier, skip_unmatched, merge_classes)
        _find_duplicates(listing, keep_duplicates)
        return listing
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
    """The class a folder name stands for (:meth:`~camplus_app.labels.ModelClasses.match`).

    Raises:
        ValueError: no class, or several, match, or the name is spelled ambiguously.
    """
    return ModelClasses(classifier.categories, classifier.name).match(name).class_index


def _class_folders(
    root: Path, classifier: Classifier, skip_unmatched: bool, merge_classes: bool = False
) -> Listing:
    classes = ModelClasses(classifier.categories, classifier.name)
    listing = Listing("class folders", [], root=root, source=classes.source)
    _refuse_lookalikes(root)
    found: dict[str, tuple[list[Path], FolderMatch | None]] = {}
    for folder in sorted(root.iterdir()):
        why = _not_a_class_folder(folder, root)
        if why is None:
            files = _folder_files(folder, root, listing)
            try:
                found[folder.name] = (files, classes.match(folder.name))
            except FolderNameError as error:
                found[folder.name] = (files, None)
                listing.unmatched[folder.name] = str(error)
        elif why:
            listing.skipped[folder.name] = why
        else:
            listing.hidden.append(folder.name)
    for name in [n for n, (files, _) in found.items() if not files]:
        listing.empty.append(name)
        listing.unmatched.pop(name, None)  # an empty folder's name changes no label
    by_class: dict[int, list[str]] = {}
    for name, (files, match) in found.items():
        if files and match is not None:
            by_class.setdefault(match.class_index, []).append(name)
    matched = sum(len(names) for names in by_class.values())
    _refuse_unmatched(listing, root, classes, skip_unmatched, matched)
    shared = {index: names for index, names in by_class.items() if len(names) > 1}
    if shared and not merge_classes:
        _refuse_shared(root, shared, classes)
    listing.merged = shared
    taken: set[str] = set()
    for name, (files, match) in found.items():
        note = listing.unmatched.get(name, "") or ("empty" if not files else "")
        index = None if match is None else match.class_index
        if files and index in shared:
            others = ", ".join(n for n in shared[index] if n != name)
            note = f"merged with {others} (--merge-classes)"
        listing.folders.append(
            FolderRow(
                name,
                index,
                None if index is None else classes.categories[index],
                "" if match is None else match.how,
                len(files),
                note,
            )
        )
        if match is None or not files:
            continue
        listing.classes[name] = match.class_index
        for file in files:  # a.jpg and a.png in one folder: cat/a and cat/a-2
            image = unique_name(file.relative_to(root).with_suffix("").as_posix(), taken)
            taken.add(image)
            listing.entries.append(ImageEntry(image, str(file), match.class_index))
    if not listing.entries:
        suffixes = ", ".join(IMAGE_SUFFIXES)
        empty = f" (empty: {', '.join(map(shown_name, listing.empty))})" if listing.empty else ""
        raise ValueError(f"the class folders of {root} hold no images ({suffixes}){empty}")
    return listing


def _refuse_lookalikes(root: Path) -> None:
    """Refuse folders whose names are equal in Unicode NFC (``café`` composed and decomposed):
    every table would show them as one."""
    names = [p.name for p in root.iterdir()]
    alike = groups(names, lambda name: unicodedata.normalize("NFC", name))
    if alike:
        shown = "; ".join(" and ".join(ascii(n) for n in group) for group in alike)
        raise ValueError(
            f"folders of {root} have names that differ only in their Unicode encoding (equal "
            f"in NFC: {shown}); rename one of each so that they differ in what they show"
        )


def _refuse_unmatched(
    listing: Listing, root: Path, classes: ModelClasses, skip_unmatched: bool, matched: int
) -> None:
    """Refuse folders that match no class (unless ``skip_unmatched``), and a data set of
    which none does, listing the model's classes."""
    if not listing.unmatched or (skip_unmatched and matched):
        return
    items = list(listing.unmatched.items())
    shown = "; ".join(f"{shown_name(n)}: {why}" for n, why in items[:5])
    more = len(items) - 5
    count = f"{len(items)} of {len(items) + matched}"
    hint = (
        f"name class folders by {classes.source}; the classes of {classes.model}: "
        f"{classes.label_list()}"
        if not matched
        else "pass --skip-unmatched to score the other folders"
    )
    raise ValueError(
        f"{count} class folders of {root} match no class of {classes.model} "
        f"({shown}{f'; and {more} more' if more > 0 else ''}): {hint}"
    )


def _refuse_shared(root: Path, shared: dict[int, list[str]], classes: ModelClasses) -> None:
    """Refuse class folders that name one class, naming them."""
    shown = "; ".join(
        f"{' and '.join(map(shown_name, names))} are {'both' if len(names) == 2 else 'all'} "
        f"class {classes.describe(index)}"
        for index, names in list(shared.items())[:5]
    )
    more = f"; and {len(shared) - 5} more classes" if len(shared) > 5 else ""
    raise ValueError(
        f"class folders of {root} name the same class of {classes.model}: {shown}{more}; "
        "rename or remove the folders that do not hold that class, or pass --merge-classes "
        "to score them as one class"
    )


def _not_a_class_folder(path: Path, root: Path) -> str | None:
    """Why an entry of the data set's folder is not read as a class folder ("" for a hidden
    one), or None. A link to a folder outside the data set is read; a link to one of its own
    folders would read its images twice."""
    if path.name.startswith("."):
        return ""
    if path.is_symlink():
        why = _not_read(path)
        if why in (_LOOP, _NOWHERE):
            return why
        target, top = path.resolve(), root.resolve()
        if path.is_dir() and (target == top or top in target.parents):
            inside = target.relative_to(top).as_posix()
            return (
                f"a symbolic link to {'the data set itself' if inside == '.' else inside} "
                "(not read: its images would be read twice)"
            )
    return None if path.is_dir() else "a file beside the class folders (not read)"


def _folder_files(folder: Path, root: Path, listing: Listing) -> list[Path]:
    """The image files of a class folder, in sorted order; the others go to the listing's
    ``skipped`` (with why) or ``hidden``."""
    files = []
    for path in sorted(folder.rglob("*")):
        inside = path.relative_to(folder).parts
        if any(part.startswith(".") for part in inside[:-1]):
            continue  # inside a hidden folder, which is listed itself
        if path.name.startswith("."):
            listing.hidden.append(path.relative_to(root).as_posix())
            continue
        why = _not_read(path)
        if why is None:
            files.append(path)
        elif why:
            listing.skipped[path.relative_to(root).as_posix()] = why
    return files


_LINKED_FOLDER = "a symbolic link to a folder (not followed)"
_LOOP, _NOWHERE = "a symbolic link that loops", "a symbolic link to nothing"


def _not_read(path: Path) -> str | None:
    """Why a file of a class folder is not read ("" for a folder), or None."""
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except (RuntimeError, OSError) as error:  # RuntimeError: a loop, Python < 3.13
            loops = isinstance(error, RuntimeError) or "loop" in str(error).lower()
            return _LOOP if loops else _NOWHERE
        if path.is_dir():
            return _LINKED_FOLDER
    if path.is_dir():
        return ""
    if not path.is_file():
        return "not a regular file"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image by its name ({', '.join(IMAGE_SUFFIXES)})"
    if path.stat().st_size == 0:
        return "an empty file (0 bytes)"
    return None


def _find_duplicates(listing: Listing, keep: bool) -> None:
    """List the files with the same bytes and score each picture once (the first path in
    sorted order), unless ``keep``; list the near duplicates (:mod:`camplus_app.duplicates`).

    Raises:
        ValueError: one picture in folders of different classes (unless ``keep``).
    """
    for entry in listing.entries:
        assert entry.path is not None
        # unreadable: reported with its error when it is decoded, like any bad file
        with contextlib.suppress(OSError):
            listing.fingerprints[entry.path] = Fingerprint.of(entry.path)
    hashes = {path: print_.blake2b for path, print_ in listing.fingerprints.items()}
    labels = {entry.path: entry.label for entry in listing.entries}
    same = groups(sorted(hashes, key=listing.relative), hashes.get)
    clashes = [group for group in same if len({labels[path] for path in group}) > 1]
    if clashes and not keep:
        shown = "; ".join(
            " and ".join(f"{shown_name(listing.relative(p))} (class {labels[p]})" for p in group)
            for group in clashes[:5]
        )
        raise ValueError(
            f"{len(clashes)} pictures of {listing.root} are in class folders of different "
            f"classes with the same bytes ({shown}): one picture with two labels; remove the "
            "copy in the wrong folder, or pass --keep-duplicates to score each copy with its "
            "folder's class"
        )
    listing.keep_duplicates = keep
    listing.duplicates = {
        listing.relative(first): [listing.relative(p) for p in rest] for first, *rest in same
    }
    if not keep:
        dropped = {path for _, *rest in same for path in rest}
        listing.entries = [entry for entry in listing.entries if entry.path not in dropped]
    paths = [entry.path for entry in listing.entries if entry.path is not None]
    listing.near_duplicates = [
        [listing.relative(p) for p in group] for group in near_duplicates(paths, hashes)
    ]


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


def listing_rows(
    entries: Sequence[ImageEntry],
    root: Path | None,
    fingerprints: Mapping[str, Fingerprint] | None = None,
) -> list[dict[str, object]]:
    """The rows of a run's ``dataset.csv``: per image its position, name, file (relative to a
    class-folder data set's ``root``), label and :class:`Fingerprint` (from ``fingerprints`` if
    taken already; blank for a bundled photograph, or a file that cannot be read: it is
    reported when it is decoded)."""
    rows: list[dict[str, object]] = []
    known = fingerprints or {}
    for position, entry in enumerate(entries):
        fingerprint: tuple[object, ...] = ("", "", "")
        if entry.path is not None:
            if entry.path in known:
                fingerprint = known[entry.path]
            else:  # unreadable: reported with its error when it is decoded, like any bad file
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
    "FolderRow",
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
