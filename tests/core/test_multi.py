"""LayerCams: every method from one forward and one backward pass."""

from __future__ import annotations

import functools

import pytest
import torch

from captum_camplus import (
    METHODS,
    LayerCams,
    LayerGradCamPlusPlus,
)
from captum_camplus.utils import method_class


def test_each_map_equals_its_class(resnet18, images):
    cams = LayerCams(resnet18, resnet18.layer4, methods=["all"])
    maps = cams.attribute(images, target=[1, 2, 3], relu_attributions=True)
    assert list(maps) == list(METHODS)
    for name, cls in METHODS.items():
        alone = cls(resnet18, resnet18.layer4).attribute(
            images, target=[1, 2, 3], relu_attributions=True
        )
        torch.testing.assert_close(maps[name], alone)


def test_one_forward_and_one_backward_that_stops_at_the_layer(resnet18, images):
    calls = {"forward": 0, "backward above": 0, "backward below": 0}

    def counter(key):
        def count(*_):
            calls[key] += 1

        return count

    handles = [
        resnet18.register_forward_hook(counter("forward")),
        resnet18.fc.register_full_backward_hook(counter("backward above")),
        resnet18.layer3.register_full_backward_hook(counter("backward below")),
    ]
    try:
        LayerCams(resnet18, resnet18.layer4).attribute(images, target=0)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == {"forward": 1, "backward above": 1, "backward below": 0}


def test_no_parameter_gradients(resnet18, images):
    resnet18.zero_grad(set_to_none=True)
    LayerCams(resnet18, resnet18.layer4).attribute(images, target=0)
    assert all(p.grad is None for p in resnet18.parameters())


def test_custom_methods_and_names(resnet18, images):
    cams = LayerCams(
        resnet18,
        resnet18.layer4,
        {"eq. 9": functools.partial(LayerGradCamPlusPlus, alpha="paper")},
    )
    maps = cams.attribute(images, target=0)
    assert list(maps) == ["eq. 9"]
    assert cams.methods["eq. 9"].options.form == "paper"


@pytest.mark.parametrize(
    "name", ["gradcam++", "Grad-CAM++", "grad_cam_plus_plus", "GRADCAM++", "LayerGradCamPlusPlus"]
)
def test_method_lookup_is_lenient(name):
    assert method_class(name) is METHODS["Grad-CAM++"]
    assert method_class("hires cam") is METHODS["HiResCAM"]


def test_maps_drop_the_forward_graph_unless_create_graph_is_asked(resnet18, images):
    cam = LayerGradCamPlusPlus(resnet18, resnet18.layer4)
    assert not cam.attribute(images, target=0).requires_grad
    kept = cam.attribute(images, target=0, grad_kwargs={"create_graph": True})
    assert kept.requires_grad
    all_four = LayerCams(resnet18, resnet18.layer4).attribute(images, target=0)
    assert not any(m.requires_grad for m in all_four.values())
