"""Print each method's maximum deviation from the float64 reference on resnet18 and vgg11, then on
timm ViT, distilled DeiT and Swin layers.

Run from the repository root: ``python -m benchmarks.deviation``. Deviation = max |map_float32 -
map_float64_reference| / max |map_float64_reference|, where the reference evaluates the paper's
equation (``captum_camplus.testing.reference``) in float64 on activations and gradients of the
float64 model.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torchvision.models import resnet18, vgg11

import captum_camplus.testing.reference as ref
from captum_camplus import (
    LayerGradCam,
    LayerGradCamPlus,
    LayerGradCamPlusPlus,
    LayerHiResCam,
)

CASES = {
    "Grad-CAM": (LayerGradCam, {}, ref.grad_cam),
    "Grad-CAM+": (LayerGradCamPlus, {}, ref.grad_cam_plus),
    "Grad-CAM++ eq. 13 (default)": (
        LayerGradCamPlusPlus,
        {},
        lambda A, g: ref.grad_cam_pp(A, g, form="simplified", stabilizer="clamp"),
    ),
    "Grad-CAM++ eq. 9 (paper)": (
        LayerGradCamPlusPlus,
        {"alpha": "paper"},
        lambda A, g: ref.grad_cam_pp(A, g, form="paper", stabilizer="clamp"),
    ),
    "HiResCAM": (LayerHiResCam, {}, ref.hires_cam),
}


def main() -> None:
    torch.manual_seed(0)
    models = {"resnet18": resnet18().eval(), "vgg11": vgg11().eval()}
    layers = {
        "resnet18": {
            "layer4": lambda m: m.layer4,
            "layer4[1].bn2 (signed)": lambda m: m.layer4[1].bn2,
        },
        "vgg11": {
            "features[19] (ReLU)": lambda m: m.features[19],
            "features[18] (conv, signed)": lambda m: m.features[18],
        },
    }
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    target = [207, 281]
    print("| model | layer | method | max relative deviation |")
    print("|---|---|---|---|")
    for model_name, model in models.items():
        model64 = copy.deepcopy(model).double()
        for layer_name, pick in layers[model_name].items():
            A64, g64 = ref.capture_layer(model64, pick(model64), x.double(), target)
            for method_name, (cls, options, reference) in CASES.items():
                expected = reference(A64, g64)
                cam = cls(model, pick(model), **options).attribute(x, target=target).detach()
                deviation = np.abs(cam.double().numpy() - expected).max() / np.abs(expected).max()
                print(f"| {model_name} | {layer_name} | {method_name} | {deviation:.2e} |")


def transformers() -> None:
    """The same on timm transformer layers, the references evaluated on the restored grid."""
    import timm

    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    target = [207, 281]
    print("| model | layer | layout | method | max relative deviation |")
    print("|---|---|---|---|---|")
    for name, case in ref.GRID_CASES.items():
        torch.manual_seed(0)
        model = timm.create_model(case.arch, pretrained=False).eval()
        model64 = copy.deepcopy(model).double()
        A, g = ref.capture_layer(model64, model64.get_submodule(case.layer), x.double(), target)
        A64, g64 = ref.grid_reference(A, case), ref.grid_reference(g, case)
        layer = model.get_submodule(case.layer)
        for method_name, (cls, options, reference) in CASES.items():
            expected = reference(A64, g64)
            cam = cls(model, layer, layout=case.layout, **options).attribute(x, target=target)
            deviation = np.abs(cam.double().numpy() - expected).max() / np.abs(expected).max()
            print(f"| {name} | {case.layer} | {case.layout} | {method_name} | {deviation:.2e} |")


if __name__ == "__main__":
    main()
    transformers()
