"""What a class folder's name stands for, read without a guess.

A folder of a labelled data set names one class of the model, by (in this order):

- an ImageNet-1k synset id (``n01440764``), for a model with ImageNet's 1000 classes;
- a class index, written in ASCII decimal without sign or leading zeros (``0``, ``217``);
- a class name of the model: exactly as the model writes it (``exact name``), or equal once
  both are in Unicode NFC, case-folded, with ``_`` read as a space and runs of spaces as one
  (``normalised name``).

Anything else is refused with the reason and the way out, never read as the nearest thing: a
name several classes share, digits of other scripts, a sign or leading zeros, characters that
NFKC would change (full-width forms, ligatures), invisible format or control characters, a
space at either end, bytes that are not UTF-8, and a name for a model that has no class names.

>>> classes = ModelClasses(classifier.categories, classifier.name)
>>> classes.match("n01440764")            # FolderMatch(class_index=0, how="synset id")
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Sequence
from functools import cache
from typing import NamedTuple

#: How a folder matched its class, as the report and ``classes.csv`` say it.
SYNSET, INDEX, EXACT, NORMALISED = "synset id", "index", "exact name", "normalised name"
_SYNSET = re.compile(r"n[0-9]{8}")
_INDEX = re.compile(r"0|[1-9][0-9]*")
#: Labels listed in full in a refusal; longer lists show their start.
LISTED_LABELS = 30


class FolderMatch(NamedTuple):
    """The class a folder name stands for and how it matched (:data:`SYNSET`...)."""

    class_index: int
    how: str


class FolderNameError(ValueError):
    """A folder name that names no class, or not one class; the message says what to rename."""


@cache
def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 ImageNet-1k synset ids in class-index order (shipped with timm, no download)."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_names())


def name_key(name: str) -> str:
    """A name as :data:`NORMALISED` compares it: NFC, case-folded, ``_`` as a space, one space
    for a run of them."""
    return " ".join(unicodedata.normalize("NFC", name).casefold().replace("_", " ").split())


def placeholder_labels(count: int) -> list[str]:
    """The names the zoo gives the classes of a model that names none (``class 0``...)."""
    return [f"class {i}" for i in range(count)]


class ModelClasses:
    """The classes of a model, as folder names may name them."""

    def __init__(self, categories: Sequence[str], model: str) -> None:
        self.categories = list(categories)
        self.model = model
        self.imagenet = len(self.categories) == 1000
        self.named = self.categories != placeholder_labels(len(self.categories))
        self._keys: dict[str, list[int]] = {}
        for index, category in enumerate(self.categories):
            self._keys.setdefault(name_key(category), []).append(index)

    @property
    def source(self) -> str:
        """What the folders map through, for the report."""
        count = len(self.categories)
        if self.imagenet:
            return "ImageNet-1k classes: synset ids, class indices and class names"
        if self.named:
            return f"the model's own labels ({count} classes): class names and class indices"
        return f"class indices 0 to {count - 1} (the model names no classes)"

    def describe(self, index: int) -> str:
        """``217 'English springer' (n02102040)``: a class as refusals list it."""
        synset = f" ({imagenet_synsets()[index]})" if self.imagenet else ""
        return f"{index} {self.categories[index]!r}{synset}"

    def label_list(self) -> str:
        """The model's classes, as a refusal that fits none of them lists them."""
        shown = [self.describe(i) for i in range(min(len(self.categories), LISTED_LABELS))]
        more = len(self.categories) - LISTED_LABELS
        return ", ".join(shown) + (f", ... ({len(self.categories)} in all)" if more > 0 else "")

    def match(self, name: str) -> FolderMatch:
        """The class the folder ``name`` stands for.

        Raises:
            FolderNameError: the name names no class, or several, or is spelled in a way that
                could be read more than one way; the message names the folder and what to do.
        """
        check_characters(name)
        if _SYNSET.fullmatch(name) or _SYNSET.fullmatch(name.lower()):
            return self._synset(name)
        number = _number_spelling(name)
        if number is not None:
            return self._index(name, number)
        if not self.named:
            raise FolderNameError(
                f"{name!r} is not a class index, and {self.model} names no classes (its "
                f"{len(self.categories)} outputs are unnamed): name the folder by class index, "
                f"0 to {len(self.categories) - 1}"
            )
        found = self._keys.get(name_key(name), [])
        if len(found) > 1:
            listed = ", ".join(self.describe(i) for i in found)
            way = "synset id" if self.imagenet else "class index"
            raise FolderNameError(
                f"{name!r} names {len(found)} classes of {self.model}: {listed}; rename the "
                f"folder to the {way} of the class it holds"
            )
        if found:
            index = found[0]
            return FolderMatch(index, EXACT if self.categories[index] == name else NORMALISED)
        close = difflib.get_close_matches(name_key(name), list(self._keys), n=3)
        hint = f" (closest: {', '.join(repr(self.categories[self._keys[c][0]]) for c in close)})"
        raise FolderNameError(
            f"unknown class {name!r} for {self.model}{hint if close else ''}: name the folder "
            "by a class index or name of the model"
        )

    def _synset(self, name: str) -> FolderMatch:
        if not self.imagenet:
            raise FolderNameError(
                f"{name!r} is an ImageNet synset id, but {self.model} has "
                f"{len(self.categories)} classes, not ImageNet-1k's: name the folder by "
                f"{'class index or name' if self.named else 'class index'}"
            )
        if name != name.lower():
            raise FolderNameError(
                f"{name!r}: synset ids are written in lower case; rename the folder to "
                f"{name.lower()!r}"
            )
        if name not in imagenet_synsets():
            raise FolderNameError(f"{name} is not an ImageNet-1k synset id")
        return FolderMatch(imagenet_synsets().index(name), SYNSET)

    def _index(self, name: str, number: int) -> FolderMatch:
        if not _INDEX.fullmatch(name):
            last = len(self.categories) - 1
            way = f"rename the folder to '{number}'" if 0 <= number <= last else f"0 to {last}"
            raise FolderNameError(
                f"{name!r} is not a class index as written: indices are ASCII decimal without "
                f"sign, leading zeros, separators or exponent; {way}"
            )
        if not 0 <= number < len(self.categories):
            raise FolderNameError(
                f"class index {number} is out of range: {self.model} has "
                f"{len(self.categories)} classes (0 to {len(self.categories) - 1})"
            )
        named = [i for i in self._keys.get(name_key(name), []) if i != number]
        if self.named and named:
            raise FolderNameError(
                f"{name!r} is class index {number} ({self.categories[number]!r}) and the name "
                f"of class {', '.join(self.describe(i) for i in named)}: rename the folder to "
                "the name of the class it holds"
            )
        return FolderMatch(number, INDEX)


def _number_spelling(name: str) -> int | None:
    """The integer a name spells in any way Python reads one (``7``, ``007``, ``+7``, ``7.0``,
    ``1_0``, ``0x7``, ``7e0``), or None for a name with no ASCII digit or that reads as none."""
    if not any("0" <= c <= "9" for c in name):
        return None
    for read in (lambda text: int(text, 10), lambda text: int(text, 0), float):
        try:
            value = read(name)
        except ValueError:
            continue
        if value == int(value):
            return int(value)
        return -1  # 7.5: a number, but no index
    return None


def check_characters(name: str) -> None:
    """Refuse a folder name that reads as more than one thing, naming the character.

    Raises:
        FolderNameError: bytes that are not UTF-8, control or invisible format characters
            (right-to-left overrides, zero-width spaces), a space at either end, digits of
            another script, or characters that NFKC changes (full-width forms, ligatures).
    """
    for char in name:
        category = unicodedata.category(char)
        if category == "Cs":
            raise FolderNameError(
                f"{ascii(name)}: the folder name is not valid UTF-8; rename the folder"
            )
        if category in ("Cc", "Cf"):
            kind = "a control character" if category == "Cc" else "an invisible format character"
            clean = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf"))
            raise FolderNameError(
                f"{ascii(name)} holds {kind}, {_codepoint(char)}, which changes how the name "
                f"shows, not what it is; rename the folder to {clean!r}"
            )
    if name != name.strip():
        raise FolderNameError(
            f"{name!r} begins or ends with a space: rename the folder to {name.strip()!r}"
        )
    for char in name:
        if unicodedata.category(char) == "Nd" and not "0" <= char <= "9":
            ascii_digits = "".join(
                str(unicodedata.decimal(c)) if unicodedata.category(c) == "Nd" else c for c in name
            )
            raise FolderNameError(
                f"{name!r} is written with digits of another script ({_codepoint(char)}): "
                f"class indices and synset ids are ASCII digits; rename the folder to "
                f"{ascii_digits!r}"
            )
    folded = unicodedata.normalize("NFKC", name)
    if folded != unicodedata.normalize("NFC", name):
        odd = next(c for c in name if unicodedata.normalize("NFKC", c) != c)
        raise FolderNameError(
            f"{name!r} holds compatibility characters ({_codepoint(odd)}: full-width forms, "
            f"ligatures, superscripts) that read as {folded!r} under NFKC; rename the folder to "
            f"{folded!r} if that is the class it holds"
        )


def _codepoint(char: str) -> str:
    return f"U+{ord(char):04X} {unicodedata.name(char, 'unnamed')}"


def shown_name(name: str) -> str:
    """A folder name as messages show it: as it is, or escaped (:func:`ascii`) if it holds
    characters that do not show (control, format, undecodable bytes)."""
    hidden = any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in name)
    return ascii(name) if hidden else name


__all__ = [
    "EXACT",
    "INDEX",
    "NORMALISED",
    "SYNSET",
    "FolderMatch",
    "FolderNameError",
    "ModelClasses",
    "check_characters",
    "imagenet_synsets",
    "name_key",
    "placeholder_labels",
    "shown_name",
]
