"""The gallery of a comparison: where the methods that differ most disagree, image by image.

For the pairs of methods whose per-image relative performance ``O'_i / O_i`` differs most from 1
(largest mean ``|log(O'/O)|``, Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with
positive gradients", arXiv:2205.10838, eq. 16), the images on which the first method is most
ahead and those on which the second is, each with every method's map computed again for that
image and kind of map (:func:`metrics.compute_cams`), min-max normalised as for the
explanation map ``E = L (.) I`` that gave its ``O``, on one colour scale per image. Scores that
leave the ratio undefined (raw outputs, :func:`metrics.result.undefined_metrics`) are compared
by their difference ``O' - O`` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from camplus_app.figures import NORMALISED_CAPTION, GalleryRow, disagreements, gallery_figure
from captum_camplus.layouts import LayoutSpec
from captum_camplus.maps import upsample_and_normalize
from captum_camplus.modules import module_device
from metrics import compute_cams
from metrics.heatmaps import MapsFrom

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from metrics import EvaluationResult

#: Pairs of methods shown, and images per pair and direction.
PAIRS, IMAGES = 2, 8
#: How two methods' ``O`` on an image are compared: their ratio, or their difference for
#: scores that leave the ratio undefined.
RATIO, DIFFERENCE = "O'/O", "O' - O"


@dataclass
class Gallery:
    """One figure of the gallery."""

    file: str  #: file stem, e.g. ``gallery-1``
    title: str
    images: list[str]  #: the rows' image names, top to bottom
    figure: Figure


def build_galleries(
    result: EvaluationResult,
    model: torch.nn.Module,
    layer: torch.nn.Module | str,
    load: Callable[[int], Tensor],
    name_of: Callable[[int], str],
    class_of: Callable[[int], str],
    *,
    layout: LayoutSpec = "auto",
    pairs: int = PAIRS,
    images: int = IMAGES,
) -> list[Gallery]:
    """The gallery's figures, two per pair (first method ahead, second ahead).

    Args:
        result: The per-image scores.
        model, layer, layout: What the maps are computed with, as in the comparison.
        load: Data position -> the ``(3, H, W)`` image in [0, 1] the model sees.
        name_of: Data position -> the image's name.
        class_of: Class index -> its label, e.g. ``"tabby (281)"``.
        pairs, images: How many pairs, and images per pair and direction.
    """
    contrast = gallery_contrast(result)
    compared = result.log_o if contrast == RATIO else result.o
    pairs_of: dict[str, tuple[MapsFrom, str, str]] = {}
    contrasts = {}
    for source in result.maps_from:
        for j, new in enumerate(result.methods):
            for base in result.methods[:j]:
                label = f"{new} vs {base}, {source} maps"
                pairs_of[label] = (source, new, base)
                contrasts[label] = compared[source][new] - compared[source][base]
    galleries: list[Gallery] = []
    for label, first, second in disagreements(contrasts, pairs, images):
        source, new, base = pairs_of[label]
        for ahead, rows in ((new, first), (base, second)):
            if len(rows) == 0:
                continue
            number = len(galleries) + 1
            title = (
                f"{label}: the {len(rows)} images on which {ahead} is most ahead "
                f"({contrast} {'largest' if ahead == new else 'smallest'} first)\n"
                f"{NORMALISED_CAPTION}"
            )
            drawn = _rows(
                result,
                source,
                rows.tolist(),
                model,
                layer,
                load,
                name_of,
                class_of,
                layout,
            )
            galleries.append(
                Gallery(
                    f"gallery-{number}",
                    title,
                    [row.name for row in drawn],
                    gallery_figure(drawn, title),
                )
            )
    return galleries


def gallery_contrast(result: EvaluationResult) -> str:
    """:data:`RATIO` where the result's scores define relative performance, else
    :data:`DIFFERENCE`."""
    return DIFFERENCE if "relative performance" in result.undefined else RATIO


def _rows(
    result: EvaluationResult,
    source: MapsFrom,
    rows: Sequence[int],
    model: torch.nn.Module,
    layer: torch.nn.Module | str,
    load: Callable[[int], Tensor],
    name_of: Callable[[int], str],
    class_of: Callable[[int], str],
    layout: LayoutSpec,
) -> list[GalleryRow]:
    positions = [int(result.index[k]) for k in rows]
    device = module_device(model)
    x = torch.stack([load(p) for p in positions]).to(device)
    target = result.target[list(rows)].to(device)
    maps = compute_cams(
        model,
        layer,
        x,
        target,
        result.methods,
        source,
        layout=layout,
        scores=result.scores,
    )
    upsampled = {m: upsample_and_normalize(cam, x.shape[-2:]) for m, cam in maps.items()}
    return [
        GalleryRow(
            name=name_of(position),
            label=class_of(int(result.target[k])),
            image=x[i].cpu(),
            heatmaps={m: upsampled[m][i, 0].cpu() for m in result.methods},
            y=float(result.y[k]),
            o={m: float(result.o[source][m][k]) for m in result.methods},
        )
        for i, (k, position) in enumerate(zip(rows, positions, strict=True))
    ]


__all__ = [
    "DIFFERENCE",
    "IMAGES",
    "PAIRS",
    "RATIO",
    "Gallery",
    "build_galleries",
    "gallery_contrast",
]
