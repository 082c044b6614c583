"""Relations between the methods that the papers state, checked on real (random-init) networks.

Papers (full references in the README): Lerma & Lucas (2022), arXiv:2205.10838.
"""

from __future__ import annotations

import functools

import pytest
import torch
from captum.attr import LayerGradCam as CaptumLayerGradCam
from captum.attr import LayerGradientXActivation
from captum.testing.helpers.basic_models import BasicModel_ConvNet_One_Conv
from torch import nn

from captum_camplus import (
    LayerCams,
    LayerGradCam,
    LayerGradCamPlus,
    LayerGradCamPlusPlus,
    LayerHiResCam,
)


def test_hand_computed_values_on_captum_one_conv_model():
    """BasicModel_ConvNet_One_Conv on arange(16), layer conv1 (signed), target 0, by hand:

    A^0 = [[-5, 4], [31, 40]], A^1 = [[-30, -21], [6, 15]] (3x3 sums of the input, biases -50, -75);
    g^0 = [[0, 1], [1, 1]], g^1 = [[0, 0], [-1, -1]] (ReLU gate x fc1 weights 1 | 1, -1, -1, -1).
    Grad-CAM: w = (3/4, -1/2) (Captum's own test expects [[11.25, 13.5], [20.25, 22.5]]).
    Grad-CAM+: w = (3/4, 0). HiResCAM: g^0 A^0 + g^1 A^1 = [[0, 4], [25, 25]].
    Grad-CAM++: S_0 = 70, alpha = 1/(2 + 70) on the three g = 1 entries, so w = (3/72, 0).
    """
    net = BasicModel_ConvNet_One_Conv()
    x = torch.arange(16.0).view(1, 1, 4, 4)
    A0 = torch.tensor([[-5.0, 4.0], [31.0, 40.0]])
    expected = {
        LayerGradCam: [[11.25, 13.5], [20.25, 22.5]],
        LayerGradCamPlus: 0.75 * A0,
        LayerHiResCam: [[0.0, 4.0], [25.0, 25.0]],
        LayerGradCamPlusPlus: A0 * 3 / 72,
    }
    for cls, values in expected.items():
        cam = cls(net, net.conv1).attribute(x, target=0)
        torch.testing.assert_close(cam, torch.as_tensor(values).view(1, 1, 2, 2))
    torch.testing.assert_close(
        LayerGradCamPlus(net, net.conv1).attribute(x, target=0, relu_attributions=True),
        (0.75 * A0).clamp(min=0).view(1, 1, 2, 2),
    )


def test_grad_cam_equals_captum(resnet18, images):
    kwargs = dict(target=[0, 5, 9], relu_attributions=True)
    ours = LayerGradCam(resnet18, resnet18.layer3).attribute(images, **kwargs)
    theirs = CaptumLayerGradCam(resnet18, resnet18.layer3).attribute(images, **kwargs)
    torch.testing.assert_close(ours, theirs)


class _PositiveHead(nn.Module):
    """conv -> ReLU -> flatten -> linear with non-negative weights: every dS/dA >= 0."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(6 * 6 * 6, 4)
        with torch.no_grad():
            self.fc.weight.abs_()

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1))


def test_grad_cam_plus_equals_grad_cam_when_all_gradients_are_non_negative():
    torch.manual_seed(0)
    model = _PositiveHead()
    x = torch.randn(4, 3, 8, 8)
    ours = LayerGradCamPlus(model, model.relu).attribute(x, target=2, relu_attributions=True)
    theirs = CaptumLayerGradCam(model, model.relu).attribute(x, target=2, relu_attributions=True)
    torch.testing.assert_close(ours, theirs)


def test_hires_cam_is_channel_sum_of_gradient_x_activation(resnet18, images):
    ours = LayerHiResCam(resnet18, resnet18.layer4).attribute(images, target=3)
    gxa = LayerGradientXActivation(resnet18, resnet18.layer4).attribute(images, target=3)
    torch.testing.assert_close(ours, gxa.sum(dim=1, keepdim=True))


def test_hires_cam_equals_grad_cam_for_gap_linear_head(resnet18, images):
    """resnet18 ends with global average pooling + linear: g is constant over positions."""
    hires = LayerHiResCam(resnet18, resnet18.layer4).attribute(images, target=[1, 2, 3])
    grad_cam = LayerGradCam(resnet18, resnet18.layer4).attribute(images, target=[1, 2, 3])
    torch.testing.assert_close(hires, grad_cam, rtol=1e-5, atol=1e-7)


def test_grad_cam_pp_paper_and_simplified_forms_agree(vgg11, images):
    maps = LayerCams(
        vgg11,
        vgg11.features[19],
        {
            "paper": functools.partial(LayerGradCamPlusPlus, alpha="paper"),
            "simplified": functools.partial(LayerGradCamPlusPlus, alpha="simplified"),
        },
    ).attribute(images, target=4)
    torch.testing.assert_close(maps["paper"], maps["simplified"], rtol=1e-5, atol=1e-9)


def test_constant_alpha_is_proportional_to_grad_cam_plus(resnet18, images):
    """alpha = 1/2: w_k = (1/2) sum ReLU(g) = (Z/2) * Grad-CAM+'s w_k (Lerma & Lucas, eq. 14)."""
    maps = LayerCams(
        resnet18,
        resnet18.layer4[1].bn2,  # signed activations: the constant needs no stabilizer
        {
            "constant": functools.partial(LayerGradCamPlusPlus, alpha="constant"),
            "plus": LayerGradCamPlus,
        },
    ).attribute(images, target=[2, 3, 4])
    Z = 2 * 2  # layer4 positions for a 64 x 64 input
    torch.testing.assert_close(maps["constant"], maps["plus"] * Z / 2)


@pytest.mark.parametrize(
    "cls", [LayerGradCam, LayerGradCamPlus, LayerGradCamPlusPlus, LayerHiResCam]
)
def test_batch_with_per_example_targets_equals_single_calls(cls, resnet18, images):
    targets = [3, 0, 8]
    method = cls(resnet18, resnet18.layer4[0].bn1)
    batch = method.attribute(images, target=targets)
    singles = torch.cat(
        [method.attribute(images[i : i + 1], target=t) for i, t in enumerate(targets)]
    )
    torch.testing.assert_close(batch, singles, rtol=1e-5, atol=1e-6)
    tensor_targets = method.attribute(images, target=torch.tensor(targets))
    torch.testing.assert_close(batch, tensor_targets)
