"""The locality probe: which input region does each cell of a reading respond to?

A count of tokens can factor the wrong way (6 x 9 patches read as 6 prefix tokens + 6 x 8), and
tokens can sit in another order than row by row (Hiera's mask units). Where no model attribute
confirms a reading, the model itself is asked, once per (layer, input size, layer shape): a
seeded random image and copies of it with one small square replaced by noise, at the quadrant
centres of a few cells of the reading, run through the model; each copy's layer tensor minus the
image's gives a change per token (or grid position) ``d_k[t] = ||A_k[t] - A_0[t]||``. The
reading is confirmed iff for every copy the position that changes most, ``argmax_t d_k[t]`` over
all positions, prefix tokens included, is the perturbed cell or one of its 8 neighbours (a
convolution spreads a change), never a prefix token, and summed over each cell's copies it is
the cell itself. Residual connections keep a token's own
patch dominant in it, so this holds for the models' layers at random init as trained; a layer
that mixes all positions (no locality) is refused, never guessed.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn import Module

from captum_camplus.layouts._shapes import image_size

#: Probed cells: every cell of a grid this small, else the corners, the centre and four off-centre
#: cells (irregular positions, so a reordering such as an unrolled or windowed one shows).
MAX_CELLS_PROBED_ALL = 9
#: Probe images per forward pass.
PROBE_CHUNK = 8

#: Per layer (weakly held): (input shape without the batch, layer shape without the batch,
#: reading) -> confirmed.
_CACHE: weakref.WeakKeyDictionary[Module, dict[tuple[Any, ...], bool]] = weakref.WeakKeyDictionary()


class ProbeError(ValueError):
    """The model could not be run on the probe images: nothing confirms the readings."""


def probe_cells(grid: tuple[int, int]) -> list[tuple[int, int]]:
    """The cells of ``grid`` whose response is checked."""
    h, w = grid
    if h * w <= MAX_CELLS_PROBED_ALL:
        return [(i, j) for i in range(h) for j in range(w)]
    picks = [
        (0, 0),
        (0, w - 1),
        (h - 1, 0),
        (h - 1, w - 1),
        (h // 2, w // 2),
        (h // 3, (2 * w) // 3),
        ((2 * h) // 3, w // 3),
        (1, w // 2 + 1),
        (h // 2 + 1, 1),
    ]
    return list(dict.fromkeys((min(i, h - 1), min(j, w - 1)) for i, j in picks))


def _squares(
    cell: tuple[int, int], grid: tuple[int, int], size: tuple[int, int]
) -> list[tuple[slice, slice]]:
    """Small squares at the quadrant centres of ``cell`` (one at the centre if it is tiny)."""
    (i, j), (h, w), (height, width) = cell, grid, size
    top, bottom = i * height / h, (i + 1) * height / h
    left, right = j * width / w, (j + 1) * width / w
    side_y, side_x = max(1, int((bottom - top) / 4)), max(1, int((right - left) / 4))
    fractions = (0.5,) if min(bottom - top, right - left) < 4 else (0.25, 0.75)
    squares = []
    for fy in fractions:
        for fx in fractions:
            y = min(int(top + fy * (bottom - top) - side_y / 2), height - side_y)
            x = min(int(left + fx * (right - left) - side_x / 2), width - side_x)
            squares.append(
                (slice(max(y, 0), max(y, 0) + side_y), slice(max(x, 0), max(x, 0) + side_x))
            )
    return squares


def layer_outputs(forward_func: Callable[..., Any], layer: Module, images: Tensor) -> Tensor:
    """The layer's (first) output tensor for ``images``, without gradients."""
    kept: list[Tensor] = []

    def keep(module: Module, args: Any, output: Any) -> None:
        tensors = [
            t for t in (output if isinstance(output, tuple) else (output,)) if isinstance(t, Tensor)
        ]
        if tensors:
            kept[:] = [tensors[0].detach()]

    handle = layer.register_forward_hook(keep)
    try:
        with torch.no_grad():
            forward_func(images)
    except Exception as error:  # reported, never swallowed: the readings stay unconfirmed
        raise ProbeError(
            f"the locality probe could not run the model on {len(images)} probe images of "
            f"{tuple(images.shape[1:])}: {type(error).__name__}: {error}"
        ) from error
    finally:
        handle.remove()
    if not kept:
        raise ProbeError("the locality probe's forward did not call the layer")
    return kept[0]


def confirms(
    forward_func: Callable[..., Any],
    layer: Module,
    input_shape: Sequence[int],
    layer_shape: Sequence[int],
    grid: tuple[int, int],
    to_cells: Callable[[Tensor], Tensor],
    key: Any,
    like: Tensor,
) -> bool:
    """Whether the locality probe confirms a reading (module docstring), cached per layer.

    Args:
        grid: The reading's ``(h, w)``.
        to_cells: The reading as a function of a change tensor ``(K, *layer_shape[1:])`` to the
            change per position, ``(K, positions)``: dropped (prefix) positions first, then the
            ``h * w`` cells row by row.
        key: What identifies the reading in the cache.
        like: A tensor whose dtype and device the probe images take.
    """
    size = image_size(input_shape)
    if size is None:
        return False
    cache_key = (tuple(input_shape[1:]), tuple(layer_shape[1:]), key)
    cached = _CACHE.setdefault(layer, {})
    if cache_key not in cached:
        cached[cache_key] = _probe(forward_func, layer, input_shape, grid, to_cells, like)
    return cached[cache_key]


def _probe(
    forward_func: Callable[..., Any],
    layer: Module,
    input_shape: Sequence[int],
    grid: tuple[int, int],
    to_cells: Callable[[Tensor], Tensor],
    like: Tensor,
) -> bool:
    size = (int(input_shape[2]), int(input_shape[3]))
    generator = torch.Generator().manual_seed(0)
    dtype = like.dtype if like.is_floating_point() else torch.float32
    base = torch.randn(1, *input_shape[1:], generator=generator)
    probes, expected = [], []
    cells = probe_cells(grid)
    for cell in cells:
        for rows, cols in _squares(cell, grid, size):
            image = base.clone()
            patch = image[:, :, rows, cols]
            image[:, :, rows, cols] = 3 * torch.randn(patch.shape, generator=generator)
            probes.append(image)
            expected.append(cell[0] * grid[1] + cell[1])
    images = torch.cat([base, *probes]).to(device=like.device, dtype=dtype)
    outputs = torch.cat(
        [
            layer_outputs(forward_func, layer, images[start : start + PROBE_CHUNK])
            for start in range(0, len(images), PROBE_CHUNK)
        ]
    )
    if tuple(outputs.shape[1:]) != tuple(like.shape[1:]):
        return False
    change = (outputs[1:] - outputs[:1]).double()
    return _local(to_cells(change), grid, expected)


def _local(per_position: Tensor, grid: tuple[int, int], expected: list[int]) -> bool:
    """Each probe's most changed position is its cell or a neighbour of it, never a dropped
    (prefix) position, and summed over a cell's probes it is the cell itself."""
    dropped = per_position.shape[1] - math.prod(grid)
    found = (per_position.argmax(dim=1) - dropped).tolist()
    for cell, at in zip(expected, found, strict=True):
        if (
            at < 0
            or abs(at // grid[1] - cell // grid[1]) > 1
            or abs(at % grid[1] - cell % grid[1]) > 1
        ):
            return False
    cells = torch.tensor(expected)
    for cell in cells.unique().tolist():
        summed = per_position[cells == cell].sum(dim=0)
        if summed.max() <= 0 or int(summed.argmax()) - dropped != cell:
            return False
    return True


__all__ = ["ProbeError", "confirms", "layer_outputs", "probe_cells"]
