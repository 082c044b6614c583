"""Drop-in compatibility: Captum's own test configurations, NoiseTunnel and visualization."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from captum.attr import LayerGradCam as CaptumLayerGradCam
from captum.attr import NoiseTunnel
from captum.attr import visualization as viz
from captum.testing.attr.helpers.gen_test_utils import get_target_layer, parse_test_config
from captum.testing.attr.helpers.test_config import config

from captum_camplus import (
    LayerCams,
    LayerGradCam,
    LayerGradCamPlus,
    LayerGradCamPlusPlus,
    LayerHiResCam,
)

OURS = [LayerGradCam, LayerGradCamPlus, LayerGradCamPlusPlus, LayerHiResCam]
# Every configuration that Captum's generated target and hook-removal tests run LayerGradCam on.
CAPTUM_CASES = {c["name"]: c for c in config if CaptumLayerGradCam in c["algorithms"]}


def _setup(case_name: str):
    _, model, args, layer_name, _, _ = parse_test_config(CAPTUM_CASES[case_name])
    model = copy.deepcopy(model)
    return model, get_target_layer(model, layer_name), copy.deepcopy(args)


def _flat(output) -> tuple[torch.Tensor, ...]:
    return output if isinstance(output, tuple) else (output,)


@pytest.mark.parametrize("cls", OURS)
@pytest.mark.parametrize("case_name", list(CAPTUM_CASES))
def test_output_conventions_match_captum(case_name, cls):
    model, layer, args = _setup(case_name)
    ours = cls(model, layer).attribute(**args)
    theirs = CaptumLayerGradCam(model, layer).attribute(**args)
    assert isinstance(ours, tuple) == isinstance(theirs, tuple)
    for a, b in zip(_flat(ours), _flat(theirs), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        if cls is LayerGradCam:
            torch.testing.assert_close(a, b)


def _slice_batch(value, index: int, batch_size: int):
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch_size:
        return value[index : index + 1]
    if isinstance(value, tuple):
        return tuple(_slice_batch(v, index, batch_size) for v in value)
    return value


PER_EXAMPLE_TARGET_CASES = [
    name
    for name, case in CAPTUM_CASES.items()
    if isinstance(case["attribute_args"]["target"], list | torch.Tensor)
]


@pytest.mark.parametrize("cls", OURS)
@pytest.mark.parametrize("case_name", PER_EXAMPLE_TARGET_CASES)
def test_per_example_targets_equal_single_example_calls(case_name, cls):
    """The check of Captum's generated target tests: a batch equals its examples one by one."""
    model, layer, args = _setup(case_name)
    method = cls(model, layer)
    batch = method.attribute(**args)
    inputs = args["inputs"]
    batch_size = (inputs[0] if isinstance(inputs, tuple) else inputs).shape[0]
    targets = args["target"]
    for i in range(batch_size):
        single_args = {k: _slice_batch(v, i, batch_size) for k, v in args.items()}
        single_args["target"] = targets[i] if isinstance(targets, list) else targets[i].item()
        single = method.attribute(**single_args)
        for a, b in zip(_flat(batch), _flat(single), strict=True):
            torch.testing.assert_close(a[i : i + 1], b)


def _hooks(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


@pytest.mark.parametrize("cls", [*OURS, LayerCams])
@pytest.mark.parametrize("case_name", list(CAPTUM_CASES))
def test_hooks_are_removed_after_success_and_after_an_error(case_name, cls):
    model, layer, args = _setup(case_name)
    before = _hooks(model)
    cls(model, layer).attribute(**args)
    assert _hooks(model) == before

    original_forward = model.forward

    def failing_forward(*inputs, **kwargs):
        original_forward(*inputs, **kwargs)  # runs the hooked layer first
        raise RuntimeError("failure inside the model")

    model.forward = failing_forward
    with pytest.raises(RuntimeError, match="failure inside the model"):
        cls(model, layer).attribute(**args)
    assert _hooks(model) == before


@pytest.mark.parametrize("cls", OURS)
def test_attribute_is_wrapped_and_works_in_noise_tunnel(cls, resnet18, images):
    method = cls(resnet18, resnet18.layer4)
    assert hasattr(method.attribute, "__wrapped__")
    tunnel = NoiseTunnel(method)
    smooth = tunnel.attribute(
        images, nt_type="smoothgrad_sq", nt_samples=3, stdevs=0.1, target=[1, 2, 3]
    )
    assert smooth.shape == (3, 1, 2, 2)
    assert torch.isfinite(smooth).all()

    # Zero noise: the tunnel's mean over identical samples is the plain attribution.
    plain = method.attribute(images, target=[1, 2, 3])
    zero_noise = tunnel.attribute(
        images, nt_type="smoothgrad", nt_samples=2, stdevs=0.0, target=[1, 2, 3]
    )
    torch.testing.assert_close(zero_noise, plain, rtol=1e-5, atol=1e-6)


def test_maps_work_with_captum_visualization(resnet18, images):
    from captum.attr import LayerAttribution

    cam = LayerGradCamPlusPlus(resnet18, resnet18.layer3).attribute(
        images[:1], target=0, relu_attributions=True
    )
    upsampled = LayerAttribution.interpolate(cam, images.shape[-2:])
    attr = upsampled[0].permute(1, 2, 0).detach().numpy()
    image = images[0].permute(1, 2, 0).numpy()
    figure, _ = viz.visualize_image_attr(
        attr, np.clip(image, 0, 1), method="blended_heat_map", sign="positive", use_pyplot=False
    )
    assert figure is not None


@pytest.mark.parametrize("cls", OURS)
def test_layer_input_channel_maps_and_grad_kwargs(cls, resnet18, images):
    layer = resnet18.layer4[1].conv1
    kwargs = dict(target=[4, 5, 6], attribute_to_layer_input=True)
    summed = cls(resnet18, layer).attribute(images, **kwargs)
    per_channel = cls(resnet18, layer).attribute(images, attr_dim_summation=False, **kwargs)
    assert summed.shape == (3, 1, 2, 2) and per_channel.shape == (3, 512, 2, 2)
    torch.testing.assert_close(per_channel.sum(dim=1, keepdim=True), summed)
    with_kwargs = cls(resnet18, layer).attribute(
        images, grad_kwargs={"retain_graph": True}, **kwargs
    )
    torch.testing.assert_close(with_kwargs, summed)
    if cls is LayerGradCam:
        theirs = CaptumLayerGradCam(resnet18, layer).attribute(images, **kwargs)
        torch.testing.assert_close(summed, theirs)
