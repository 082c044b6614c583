"""``python -m captum_camplus``: explain one image with every method, as a quick check."""

from __future__ import annotations

import torch
from torchvision.models import resnet18

from captum_camplus import LayerCams


def main() -> None:
    torch.manual_seed(0)
    model = resnet18().eval()  # random weights: this checks the plumbing, not the explanation
    image = torch.rand(1, 3, 224, 224)
    target = int(model(image).argmax())
    maps = LayerCams(model, model.layer4).attribute(image, target=target, relu_attributions=True)
    print(f"resnet18 (random init), layer4, class {target}")
    for name, cam in maps.items():
        print(f"  {name:<10} map {tuple(cam.shape)}  max {cam.max().item():.4g}")


if __name__ == "__main__":
    main()
