"""Print, per model family and layer, each method's float64 deviation under ``layout="auto"`` and
what ``layout=None`` does; then every kind of shape the layout inference refuses, and why.

Run from the repository root: ``python -m benchmarks.layouts_report``. The families are the small
random-init models of ``benchmarks/layout_families.py``; deviation = max |map_float32 -
map_float64_reference| / max |map_float64_reference|, the reference evaluating the papers'
equations on a hand reshape of the float64 model's layer tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from benchmarks import layout_families as lf
from captum_camplus import LayerCams, LayerGradCam


def _outcome(run: Callable[[], object]) -> str:
    """'runs' or the first line of the error ``run`` raises."""
    try:
        run()
    except ValueError as error:
        return f"ValueError: {error}"
    return "runs"


def family_rows() -> list[str]:
    methods = list(lf.METHODS)
    rows = [
        "| family | layer | input | grid | " + " | ".join(methods) + " | `layout=None` |",
        "|---" * (5 + len(methods)) + "|",
    ]
    for name, family in lf.FAMILIES.items():
        model, x = lf.build(name), lf.images(name)
        layer = model.get_submodule(family.layer)
        expected = lf.reference_maps(name, model, x)
        maps = LayerCams(model, layer, layout="auto").attribute(x, target=lf.TARGET)
        deviations = [f"{lf.deviation(maps[m], expected[m]):.1e}" for m in methods]
        none = _outcome(
            lambda m=model, lay=layer, x=x: LayerGradCam(m, lay).attribute(x, lf.TARGET)
        )
        named = none.split("pass ", 1)[1].split(",")[0].split(" (")[0] if "pass " in none else none
        size = f"{family.size[0]} x {family.size[1]}"
        grid = f"{family.grid[0]} x {family.grid[1]}"
        rows.append(
            f"| {name} | `{family.layer}` | {size} | {grid} | "
            + " | ".join(deviations)
            + f" | error naming `{named}` |"
        )
    return rows


def refusals() -> list[tuple[str, str]]:
    """(case, the error) for each kind of refused shape."""
    torch.manual_seed(0)
    x16, x32 = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 32, 32)
    cases: list[tuple[str, Callable[[], object]]] = []
    opaque = lf.Opaque(nn.Conv2d(3, 4, 4, stride=4))
    conv = nn.Sequential(opaque, nn.Flatten(), nn.Linear(64, 5)).eval()
    cases.append(
        (
            "auto, (N, 4, 4, 4) of a 16 x 16 image from a module that states no layout: channels "
            "first and channels last both fit",
            lambda: LayerGradCam(conv, opaque, layout="auto").attribute(x16, [0, 1]),
        )
    )
    tokens = lf.Tokens(prefix=1, patch=16).eval()
    cases.append(
        (
            "auto, (N, 5, D) of a 32 x 32 image, no model attributes: 1 + 2 x 2 or 4 + 1 x 1",
            lambda: LayerGradCam(tokens, tokens.norm, layout="auto").attribute(x32, [0, 1]),
        )
    )
    many = lf.Tokens(prefix=26, patch=8).eval()
    cases.append(
        (
            "auto, (N, 30, D) of a 16 x 16 image: no P <= 8 and patch grid fit",
            lambda: LayerGradCam(many, many.norm, layout="auto").attribute(x16, [0, 1]),
        )
    )
    odd = nn.Sequential(
        lf.Opaque(nn.Conv2d(3, 5, (14, 10))), nn.Flatten(), nn.Linear(105, 4)
    ).eval()
    cases.append(
        (
            "auto, (N, 5, 3, 7) of a 16 x 16 image: neither pair of axes has the image's aspect "
            "(None keeps Captum's channels first here)",
            lambda: LayerGradCam(odd, odd[0], layout="auto").attribute(x16, [0, 1]),
        )
    )
    vit = lf.build("timm ViT")
    cases.append(
        (
            "None, timm ViT tokens (N, 17, 16) of a 32 x 32 image",
            lambda: LayerGradCam(vit, vit.blocks[-1].norm1).attribute(x32, [0, 1]),
        )
    )
    cases.append(
        (
            "None, a 3-D tensor of a 4-D image that no token grid fits",
            lambda: LayerGradCam(many, many.norm).attribute(x16, [0, 1]),
        )
    )
    swin = lf.build("torchvision swin_t (small)")
    x_swin = lf.images("torchvision swin_t (small)")
    cases.append(
        (
            "None, torchvision Swin (N, 4, 8, 16) of a 32 x 64 image (shapes fit both; the "
            "Permute modules say channels last)",
            lambda: LayerGradCam(swin, swin.features[3][0].norm1).attribute(x_swin, [0, 1]),
        )
    )
    timm_swin = lf.build("timm Swin, 32 x 128")
    x_wide = lf.images("timm Swin, 32 x 128")
    qkv = timm_swin.layers[-1].blocks[-1].attn.qkv
    cases.append(
        (
            "any layout, timm Swin windowed attention attn.qkv (2 images -> 32 rows)",
            lambda: LayerGradCam(timm_swin, qkv, layout="auto").attribute(x_wide, [0, 1]),
        )
    )
    seq = lf.SequenceFirst().eval()
    cases.append(
        (
            "any layout, a sequence-first (T, N, D) tensor",
            lambda: LayerGradCam(seq, seq.norm, layout="auto").attribute(x32, [0, 1]),
        )
    )
    return [(case, _outcome(run)) for case, run in cases]


def main() -> None:
    print("## Per family: deviation from the float64 reference under layout='auto'\n")
    print("\n".join(family_rows()))
    print("\n## Shapes the inference refuses\n")
    for case, outcome in refusals():
        print(f"- {case}:\n  {outcome}")


if __name__ == "__main__":
    main()
