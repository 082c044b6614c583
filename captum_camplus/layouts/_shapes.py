"""What the shapes say: pure arithmetic on a layer tensor's shape and its input's.

For a 4-D image input ``(N, C_in, H, W)``, :func:`candidates` lists the readings of a layer
tensor's shape (see :mod:`captum_camplus.layouts`) as plain data; the layout types wrap them.
Nothing here reads a model or builds a layout.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

from torch import Tensor

from captum_camplus.layouts._model import NO_FACTS, ModelFacts

#: The shape of the (first) input a layer tensor came from, or None where it is not known.
InputShape = Sequence[int] | None

#: The most prefix tokens a token reading assumes without a model that states its count.
MAX_PREFIX_TOKENS = 8


class Candidate(NamedTuple):
    """One reading of a layer tensor's shape, as plain data.

    Attributes:
        kind: ``"channels_first"`` ``(N, C, h, w)``, ``"channels_last"`` ``(N, h, w, C)`` or
            ``"tokens"`` ``(N, P + gh * gw, D)``.
        grid: ``(h, w)`` or ``(gh, gw)``: the grid the reading gives.
        prefix_tokens: ``P`` of a token reading (0 otherwise).
    """

    kind: Literal["channels_first", "channels_last", "tokens"]
    grid: tuple[int, int]
    prefix_tokens: int = 0


def candidates(
    shape: Sequence[int], input_shape: Sequence[int], facts: ModelFacts = NO_FACTS
) -> list[Candidate]:
    """The readings of a layer tensor of ``shape`` for a 4-D image input (see
    :mod:`captum_camplus.layouts`), restricted to those ``facts`` allow; [] for another
    dimensionality. Channels first before channels last; tokens by prefix count, then grid."""
    size = image_size(input_shape)
    if size is None or len(shape) not in (3, 4) or shape[0] != input_shape[0]:
        return []
    height, width = size
    if len(shape) == 4:
        found = []
        if facts.channels_last is not True and follows(shape[2], shape[3], height, width):
            found.append(Candidate("channels_first", (shape[2], shape[3])))
        if facts.channels_last is not False and follows(shape[1], shape[2], height, width):
            found.append(Candidate("channels_last", (shape[1], shape[2])))
        return found
    prefixes = (
        range(MAX_PREFIX_TOKENS + 1) if facts.prefix_tokens is None else [facts.prefix_tokens]
    )
    grids: dict[tuple[int, tuple[int, int]], bool] = {}  # (P, grid) -> from an exact patch size
    for prefix in prefixes:
        if shape[1] - prefix > 0:
            for grid, exact in _token_grids(shape[1] - prefix, height, width, facts.patch_size):
                grids[prefix, grid] = grids.get((prefix, grid), False) or exact
    if any(grids.values()) or facts.prefix_tokens is None:  # rounded grids need the model's P
        grids = {key: exact for key, exact in grids.items() if exact}
    return [Candidate("tokens", grid, prefix) for prefix, grid in sorted(grids)]


def patch_grids(count: int, height: int, width: int) -> list[tuple[int, int]]:
    """The grids ``(gh, gw)`` of ``count`` patches that an image of ``height x width`` gives
    (exact patch sizes first, see :func:`candidates`)."""
    found: dict[tuple[int, int], bool] = {}
    for grid, exact in _token_grids(count, height, width, None):
        found[grid] = found.get(grid, False) or exact
    exact_grids = [grid for grid, is_exact in found.items() if is_exact]
    return sorted(exact_grids or found)


def _token_grids(
    count: int, height: int, width: int, patch: tuple[int, int] | None
) -> Iterable[tuple[tuple[int, int], bool]]:
    sizes = [patch] if patch is not None else [(p, p) for p in range(1, max(height, width) + 1)]
    for ph, pw in sizes:
        if height % ph == 0 and width % pw == 0:
            grid = (height // ph, width // pw)
            if grid[0] * grid[1] == count:
                yield grid, True
            continue
        for grid in ((height // ph, width // pw), (-(-height // ph), -(-width // pw))):
            if min(grid) >= 1 and grid[0] * grid[1] == count:
                yield grid, False


def follows(h: int, w: int, height: int, width: int) -> bool:
    """A ``h x w`` grid follows a ``height x width`` image: no larger, same aspect within one
    cell."""
    return (
        1 <= h <= height
        and 1 <= w <= width
        and abs(w - width * h / height) <= 1
        and abs(h - height * w / width) <= 1
    )


def partitioned(shape: Sequence[int], height: int, width: int) -> bool:
    """A 4-D ``(N, G, P, C)`` tensor is an image's grid cut into ``G`` parts of ``P`` tokens
    (window or grid attention): ``G * P`` tokens tile the image (:func:`patch_grids`), while
    ``(P, C)`` is not a grid of its aspect (a channels-first reading)."""
    return (
        len(shape) == 4
        and shape[1] > 1
        and not follows(shape[2], shape[3], height, width)
        and bool(patch_grids(shape[1] * shape[2], height, width))
    )


def check_batch(tensor: Tensor, input_shape: InputShape) -> None:
    """The layer tensor's first dimension is the batch of the input it came from."""
    if input_shape is None or len(input_shape) == 0 or tensor.dim() == 0:
        return
    batch = int(input_shape[0])
    first = int(tensor.shape[0])
    if first == batch:
        return
    shape = tuple(tensor.shape)
    if tensor.dim() == 3 and tensor.shape[1] == batch:
        why = (
            "it is sequence-first (T, N, D), as nn.MultiheadAttention without batch_first and "
            "older open_clip towers give it; pick a layer with batch-first output, or pass a "
            "callable layout that moves the batch first and restores the grid"
        )
    elif first % batch == 0:
        why = (
            f"it holds {first // batch} rows per image, as windowed attention (Swin's "
            "attn.qkv, attn) splits each image into windows, so one map per image does not "
            "exist there; pick the block's norm1 (before the window partition)"
        )
    else:
        why = "no map per image can be made from it; pick a layer with one row per image"
    raise ValueError(
        f"the layer tensor {shape} does not have the batch ({batch} images of the input "
        f"{tuple(input_shape)}) as its first dimension: {why}"
    )


def image_size(input_shape: InputShape) -> tuple[int, int] | None:
    """``(H, W)`` of a 4-D image input; None for another input or none."""
    if input_shape is None or len(input_shape) != 4:
        return None
    return int(input_shape[2]), int(input_shape[3])


def size_text(input_shape: Sequence[int]) -> str:
    size = image_size(input_shape)
    return " x ".join(map(str, size)) if size else str(tuple(input_shape))


def square_grid(count: int) -> tuple[int, int] | None:
    side = math.isqrt(max(count, 0))
    return (side, side) if count > 0 and side * side == count else None


__all__ = [
    "MAX_PREFIX_TOKENS",
    "Candidate",
    "InputShape",
    "candidates",
    "check_batch",
    "follows",
    "image_size",
    "partitioned",
    "patch_grids",
    "size_text",
    "square_grid",
]
