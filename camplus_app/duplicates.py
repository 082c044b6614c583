"""Images of a data set that are the same picture twice.

- Duplicates: files with identical bytes (the same BLAKE2b hash that ``dataset.csv`` records).
- Near duplicates: files with other bytes whose 64-bit average hash is equal: the picture
  decoded in greyscale at reduced size (a JPEG's own draft scaling), shrunk to 8 x 8 pixels by
  box averaging, one bit per pixel brighter than the mean of the 64. The same picture saved at
  another size or in another encoding mostly keeps its hash; a flat picture (no pixel above the
  mean) has no hash. This is a cheap rule for a report line, not a proof: near duplicates are
  listed, never removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np

#: Side of the square the average hash shrinks a picture to (64 bits).
HASH_SIDE = 8

_Key = TypeVar("_Key")


def groups(items: Iterable[str], key: Callable[[str], _Key | None]) -> list[list[str]]:
    """The items that share a key, in groups of two or more, each in the order given (items
    whose key is None are left out)."""
    by_key: dict[_Key, list[str]] = {}
    for item in items:
        value = key(item)
        if value is not None:
            by_key.setdefault(value, []).append(item)
    return [group for group in by_key.values() if len(group) > 1]


def average_hash(path: str | Path) -> int | None:
    """The 64-bit average hash of an image file (module docstring), or None for a flat
    picture or a file that cannot be decoded (reported when the run decodes it)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft("L", (4 * HASH_SIDE, 4 * HASH_SIDE))  # JPEG: decode at reduced size
            small = image.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX)
    except (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError):
        return None
    pixels = np.asarray(small, dtype=np.float64).ravel()
    bits = sum(1 << i for i, above in enumerate(pixels > pixels.mean()) if above)
    return bits or None


def near_duplicates(paths: Iterable[str], hashes: Mapping[str, str]) -> list[list[str]]:
    """Groups of files with other bytes (``hashes``: path -> BLAKE2b) but the same
    :func:`average_hash`; one file stands for each set of identical bytes."""
    seen: set[str] = set()
    distinct = []
    for path in paths:
        if path in hashes and hashes[path] not in seen:
            seen.add(hashes[path])
            distinct.append(path)
    return groups(distinct, average_hash)


__all__ = ["HASH_SIDE", "average_hash", "groups", "near_duplicates"]
