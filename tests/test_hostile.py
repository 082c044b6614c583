"""Hostile input, as users give it: every case gets the right answer or an error in our terms.

Three parts: the attribution API (``captum_camplus``), the metrics (``metrics``, with Quantus), the
``camplus`` command. Each numeric case is checked against an independent float64 computation
(``captum_camplus/testing/reference.py``) or against the same computation on ordinary input.
"""

from __future__ import annotations

import copy
import csv
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import quantus
import torch
from captum.attr import NoiseTunnel
from metrics_models import tiny_setup
from torch import nn

import captum_camplus.testing.reference as reference
from captum_camplus import (
    LayerCams,
    LayerGradCam,
    LayerGradCamPlus,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    normalize_maps,
    upsample_and_normalize,
)
from captum_camplus.masking import bottom_rows
from metrics import (
    AverageDrop,
    DeadZoneMass,
    RelativePerformance,
    WinPercentage,
    cam_explain,
    class_scores,
    compute_cams,
    evaluate_methods,
)

METHODS = [LayerGradCam, LayerGradCamPlus, LayerGradCamPlusPlus, LayerHiResCam]
REFERENCES = {
    LayerGradCam: reference.grad_cam,
    LayerGradCamPlus: reference.grad_cam_plus,
    LayerGradCamPlusPlus: lambda A, g: reference.grad_cam_pp(
        A, g, form="simplified", stabilizer="clamp"
    ),
    LayerHiResCam: reference.hires_cam,
}
IDENTITY = nn.Identity()


class Net(nn.Module):
    """conv -> BatchNorm -> ReLU -> global mean -> linear; ``side`` is called, never used."""

    def __init__(self, classes: int = 5, outputs: str = "logits") -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.side = nn.Conv2d(3, 6, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, classes)
        self.outputs = outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.side(x)
        logits = self.fc(self.pool(self.relu(self.bn(self.conv(x)))).flatten(1))
        if self.outputs == "probabilities":
            return logits.softmax(dim=1)
        if self.outputs == "log-probabilities":
            return logits.log_softmax(dim=1)
        return logits


@pytest.fixture
def net() -> Net:
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():  # BatchNorm statistics that differ from a batch's own
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def _maps(out) -> list[torch.Tensor]:
    return list(out.values()) if isinstance(out, dict) else [out]


# --- 1. the attribution API: maps ------------------------------------------------------------


@pytest.mark.parametrize("size", [(7, 7), (224, 224), (5, 9)])
def test_one_by_one_map_upsampled_is_constant_not_speckle(size):
    """A 1x1 layer map (after global pooling) has no spatial information to stretch."""
    maps = torch.tensor([0.3, 1e-30, -2.0, 7e30]).view(4, 1, 1, 1)
    heat = upsample_and_normalize(maps, size)
    assert torch.equal(heat[[0, 1, 3]], torch.ones(3, 1, *size))
    assert torch.equal(heat[2], torch.zeros(1, *size))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("spatial", [1, 2, 3])
def test_constant_maps_stay_constant_for_every_dtype_and_dimension(dtype, spatial):
    for value in (0.1, 3.0, 1234.5):
        maps = torch.full((2, 1, *[3] * spatial), value, dtype=dtype)
        heat = upsample_and_normalize(maps, [17] * spatial)
        assert torch.equal(heat, torch.ones_like(heat)), value


def test_a_layer_with_one_position_gives_a_constant_heatmap():
    """Grad-CAM of a layer after global pooling, through the public API."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    ).eval()
    cam = LayerGradCamPlus(model, model[2]).attribute(torch.rand(2, 3, 8, 8), target=0)
    assert cam.shape == (2, 1, 1, 1)
    heat = upsample_and_normalize(cam, (32, 32))
    assert ((heat == 0) | (heat == 1)).all() and (heat == heat[:, :, :1, :1]).all()


def test_a_real_small_spread_is_kept():
    """Rounding noise is a few ulps of the magnitude; a spread of 1e-4 of it is signal."""
    maps = torch.full((1, 1, 4, 4), 1000.0)
    maps[0, 0, 0, 0] += 0.1
    heat = normalize_maps(maps)
    assert heat[0, 0, 0, 0] == 1 and heat.sum() == 1


@pytest.mark.parametrize("scale", [3e38, 1e-38, 1e-44])
def test_maps_at_the_edges_of_float32_normalise_exactly(scale):
    base = torch.tensor([[-1.0, 0.0], [0.5, 1.0]], dtype=torch.float64)
    maps = (base * scale).to(torch.float32).view(1, 1, 2, 2)
    expected = reference_min_max(maps)
    got = normalize_maps(maps)
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(got.double().numpy(), expected, atol=1e-6)
    heat = upsample_and_normalize(maps, (5, 5))
    assert torch.isfinite(heat).all() and heat.amin() == 0 and heat.amax() == 1


def reference_min_max(maps: torch.Tensor) -> np.ndarray:
    """Per-map min-max in float64 (maps that vary)."""
    values = maps.double().numpy()
    low = values.min(axis=tuple(range(1, values.ndim)), keepdims=True)
    high = values.max(axis=tuple(range(1, values.ndim)), keepdims=True)
    return (values - low) / (high - low)


def test_integer_maps_normalise():
    got = normalize_maps(torch.tensor([[[[0, 2], [4, 8]]]]))
    assert got.is_floating_point()
    torch.testing.assert_close(got, torch.tensor([[[[0, 0.25], [0.5, 1.0]]]], dtype=got.dtype))


# --- 1. the attribution API: numeric edges ---------------------------------------------------


@pytest.mark.parametrize("cls", METHODS)
def test_grad_cam_pp_and_others_finite_when_s_k_overflows_float32(cls):
    """S_k = sum of 4096 activations of 1e36 overflows float32; g = 0 on most entries."""
    A = torch.full((1, 3, 64, 64), 1e36)
    A[0, 1] *= -1
    g = torch.zeros(1, 3, 64, 64)
    g[0, :, 0, 0], g[0, :, 5, 7], g[0, :, 9, 9] = 1e-3, -2e-3, 5e-4
    cam = cls(IDENTITY, IDENTITY).map_from_layer(A, g)
    assert torch.isfinite(cam).all()
    expected = REFERENCES[cls](A, g)
    np.testing.assert_allclose(cam.double().numpy(), expected, rtol=1e-5, atol=1e-6 * 1e36)


@pytest.mark.parametrize("cls", [LayerGradCam, LayerGradCamPlus, LayerHiResCam])
def test_channel_sum_beyond_float32_comes_back_in_float64(cls):
    A = torch.full((1, 512, 3, 3), 1e37)
    A[0, :, 1, 1] = -3e36
    g = torch.ones(1, 512, 3, 3)
    with pytest.warns(UserWarning, match="outside the normal range of the layer's torch.float32"):
        cam = cls(IDENTITY, IDENTITY).map_from_layer(A, g)
    assert cam.dtype == torch.float64 and torch.isfinite(cam).all()
    np.testing.assert_allclose(cam.numpy(), REFERENCES[cls](A, g), rtol=1e-6)


@pytest.mark.parametrize("alpha", ["paper", "simplified"])
def test_grad_cam_pp_paper_form_with_huge_gradients_equals_eq_13(alpha):
    """g^2, g^3 overflow (float32 at 1e25, float64 at 1e110): eq. 9 falls back to eq. 13."""
    for dtype, scale in ((torch.float32, 1e25), (torch.float64, 1e110)):
        A = torch.rand(1, 4, 5, 5, generator=torch.Generator().manual_seed(0)).to(dtype)
        g = torch.rand(1, 4, 5, 5, generator=torch.Generator().manual_seed(1)).to(dtype) * scale
        cam = LayerGradCamPlusPlus(IDENTITY, IDENTITY, alpha=alpha).map_from_layer(A, g)
        expected = reference.grad_cam_pp(A, g, form="simplified")
        np.testing.assert_allclose(cam.double().numpy(), expected, rtol=1e-4)


def test_grad_cam_pp_extreme_but_finite_options():
    A = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    A[:, 0] = 0  # S_k = 0: lambda * S_k would be inf * 0 in float32
    g = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    for options in (
        {"exponent_scale": 1e300},
        {"exponent_scale": 1e-300},
        {"min_denominator": 1e300},
        {"min_denominator": 1e-300},
        {"alpha": "paper", "exponent_scale": 1e300, "stabilizer": "zero"},
        {"normalize_alpha": True, "exponent_scale": 1e30},
    ):
        method = LayerGradCamPlusPlus(IDENTITY, IDENTITY, **options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # maps below float32's normal range: float64
            cam = method.map_from_layer(A, g)
        assert torch.isfinite(cam).all(), options
        expected = reference.grad_cam_pp(
            A,
            g,
            form=options.get("alpha", "simplified"),
            lam=options.get("exponent_scale", 1.0),
            stabilizer=options.get("stabilizer", "clamp"),
            min_denominator=options.get("min_denominator", 2.0),
            normalize=options.get("normalize_alpha", False),
        )
        np.testing.assert_allclose(
            cam.double().numpy(), expected, atol=1e-5 * np.abs(expected).max(), err_msg=str(options)
        )
        assert not any(np.isnan(v) for v in method.last_diagnostics.summary().values())


class Spread(nn.Module):
    """1x1 conv to many channels of +v and -v at two positions: the logit cancels, the map not."""

    def __init__(self, channels: int, value: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 1, bias=False)
        nn.init.constant_(self.conv.weight, value)
        self.fc = nn.Linear(channels, 2, bias=False)
        nn.init.constant_(self.fc.weight, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


@pytest.mark.parametrize("cls", METHODS)
def test_float16_map_beyond_65504_comes_back_in_float32(cls):
    x = torch.tensor([1.0, -1.0]).view(1, 1, 1, 2)
    model = Spread(512, 1000.0)
    full = cls(model, model.conv).attribute(x, target=0)
    half = model.half()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cam = cls(half, half.conv).attribute(x.half(), target=0)
    assert torch.isfinite(cam).all()
    if full.abs().amax() > 65504:
        assert cam.dtype == torch.float32 and "outside the normal range" in str(caught[0].message)
    else:
        assert cam.dtype == torch.float16
    torch.testing.assert_close(cam.float(), full, rtol=1e-3, atol=1e-3 * full.abs().amax())


def test_float16_model_that_overflows_says_so():
    model = Spread(8, 3e4).half()
    x = torch.tensor([4.0, -1.0]).view(1, 1, 1, 2).half()
    with pytest.raises(FloatingPointError, match="overflowed before the layer in torch.float16"):
        LayerGradCam(model, model.conv).attribute(x, target=0)


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("exponent_scale", float("inf"), ValueError),
        ("exponent_scale", float("nan"), ValueError),
        ("exponent_scale", 0, ValueError),
        ("exponent_scale", -1.0, ValueError),
        ("exponent_scale", "1", TypeError),
        ("exponent_scale", True, TypeError),
        ("min_denominator", float("inf"), ValueError),
        ("min_denominator", None, TypeError),
        ("normalize_alpha", "no", TypeError),
        ("normalize_alpha", 1, TypeError),
        ("alpha", None, ValueError),
        ("alpha", ["paper"], ValueError),
        ("stabilizer", 0, ValueError),
    ],
)
def test_options_that_cannot_work_are_refused_at_construction(net, option, value, error):
    with pytest.raises(error, match=option):
        LayerGradCamPlusPlus(net, net.conv, **{option: value})


def test_numpy_real_options_are_accepted(net):
    method = LayerGradCamPlusPlus(
        net, net.conv, exponent_scale=np.float32(2.0), normalize_alpha=np.bool_(True)
    )
    assert method.options.exponent_scale == 2.0 and method.options.normalize is True


# --- 1. the attribution API: errors in our terms ---------------------------------------------


ALL = [*METHODS, LayerCams]


@pytest.mark.parametrize("cls", ALL)
def test_empty_batch(cls, net, x):
    with pytest.raises(ValueError, match="the batch is empty"):
        cls(net, net.conv).attribute(x[:0], target=0)


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        (torch.tensor([0.0, 1.0, 2.0, 3.0]), TypeError, "integer class indices, got torch.float32"),
        (torch.tensor([True, False, True, False]), TypeError, "got torch.bool"),
        (1.0, TypeError, "class index"),
        ("tabby", TypeError, "class index"),
        (True, TypeError, "class index"),
        ([0, 1, 2.5, 3], TypeError, "class index"),
        (torch.tensor([[0], [1], [2], [3]]), ValueError, r"shape \(4, 1\)"),
        (-1, ValueError, "negative"),
        ([0, 1, -1, 2], ValueError, "negative"),
        (5, ValueError, r"out of range .* \[0, 5\)"),
        (torch.tensor([0, 1, 7, 2]), ValueError, r"class indices in \[0, 5\)"),
        (torch.tensor([0, -1, 2, 2]), ValueError, r"class indices in \[0, 5\)"),
        ((0, 1), ValueError, "has 2 indices"),
        (None, ValueError, "pass target="),
    ],
)
@pytest.mark.parametrize("cls", [LayerGradCam, LayerCams])
def test_bad_targets_are_named(cls, net, x, target, error, message):
    with pytest.raises(error, match=message):
        cls(net, net.conv).attribute(x, target=target)


@pytest.mark.parametrize(
    ("numpy_target", "plain"),
    [
        (np.int64(2), 2),
        (np.array([0, 1, 2, 3]), torch.tensor([0, 1, 2, 3])),
        ([np.int32(1)] * 4, [1] * 4),
    ],
)
def test_numpy_targets_mean_what_they_say(net, x, numpy_target, plain):
    cam = LayerGradCam(net, net.conv)
    torch.testing.assert_close(
        cam.attribute(x, target=numpy_target), cam.attribute(x, target=plain), rtol=0, atol=0
    )


def test_one_score_per_example_with_a_target(net, x):
    with pytest.raises(ValueError, match=r"one score per example \(shape \(4,\)\)"):
        LayerGradCam(lambda inp: net(inp)[:, 0], net.conv).attribute(x, target=0)
    cam = LayerGradCam(lambda inp: net(inp)[:, 0], net.conv).attribute(x)
    torch.testing.assert_close(cam, LayerGradCam(net, net.conv).attribute(x, target=0))


@pytest.mark.parametrize("wrap", [lambda o: (o, o), lambda o: {"logits": o}])
def test_model_returning_no_tensor(net, x, wrap):
    with pytest.raises(TypeError, match="not a tensor of scores"):
        LayerHiResCam(lambda inp: wrap(net(inp)), net.conv).attribute(x, target=0)


def test_input_without_batch_dimension(x):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(0), nn.LazyLinear(5))
    model(x[0])  # a model that accepts an unbatched image: output (5,)
    with pytest.raises(ValueError, match=r"shape \(5,\) for a batch of 3 .*unsqueeze"):
        LayerGradCam(model, model[1]).attribute(x[0], target=0)


class Detours(nn.Module):
    """The layer ``conv`` is called, but its output is ``mode``: unused, detached or no_grad."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.other = nn.Conv2d(3, 4, 3)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "no_grad":
            with torch.no_grad():
                h = self.conv(x)
        else:
            h = self.conv(x)
        if self.mode == "detached":
            h = h.detach()
        kept = self.other(x) if self.mode == "unused" else h + self.other(x)
        return kept.mean(dim=(2, 3))


@pytest.mark.parametrize("mode", ["unused", "detached", "no_grad"])
@pytest.mark.parametrize("cls", [LayerGradCamPlusPlus, LayerCams])
def test_layer_whose_output_does_not_reach_the_score(cls, mode, x):
    model = Detours(mode)
    with pytest.raises(ValueError, match="does not depend on the output of the layer Conv2d"):
        cls(model, model.conv).attribute(x, target=0)


@pytest.mark.parametrize("kind", ["trace", "script"])
@pytest.mark.parametrize("eager_layer", [False, True])
def test_torchscript_models_are_refused_with_the_reason(net, x, kind, eager_layer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        scripted = torch.jit.trace(net, x) if kind == "trace" else torch.jit.script(net)
    layer = net.conv if eager_layer else scripted.conv
    for cls in (LayerGradCam, LayerCams):
        with pytest.raises(TypeError, match="TorchScript .* never run Python forward hooks"):
            cls(scripted, layer)


def test_a_function_calling_torchscript_gets_a_hint(net, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, x)
    with pytest.raises(ValueError, match="was not called .* TorchScript"):
        LayerGradCam(lambda inp: traced(inp), net.conv).attribute(x, target=0)


def test_method_list_given_as_one_string(net):
    with pytest.raises(TypeError, match=r"not one string: pass \['Grad-CAM\+\+'\]"):
        LayerCams(net, net.conv, methods="Grad-CAM++")
    with pytest.raises(TypeError, match="not one string"):
        compute_cams(net, net.conv, torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), "HiResCAM")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"relu_attributions": "no"}, "relu_attributions must be True or False"),
        ({"attr_dim_summation": None}, "attr_dim_summation must be True or False"),
        ({"attribute_to_layer_input": 1}, "attribute_to_layer_input must be True or False"),
        ({"grad_kwargs": [("retain_graph", True)]}, "grad_kwargs must be a dict"),
    ],
)
@pytest.mark.parametrize("cls", [LayerHiResCam, LayerCams])
def test_attribute_options_of_the_wrong_type(cls, net, x, kwargs, message):
    with pytest.raises(TypeError, match=message):
        cls(net, net.conv).attribute(x, target=0, **kwargs)


def test_layer_given_by_name_or_inputs_as_numpy(net, x):
    with pytest.raises(TypeError, match="layer must be an nn.Module .* got str"):
        LayerGradCam(net, "conv")
    with pytest.raises(TypeError, match="got ndarray .* torch.as_tensor"):
        LayerGradCam(net, net.conv).attribute(x.numpy(), target=0)


@pytest.mark.parametrize("cls", ALL)
def test_attribution_never_changes_the_model(cls, net, x):
    state = copy.deepcopy(net.state_dict())
    out = cls(net, net.conv).attribute(x, target=1)
    assert all(torch.isfinite(m).all() for m in _maps(out))
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert not net._forward_hooks and not net.conv._forward_hooks


def test_noise_tunnel_still_wraps_the_checked_methods(net, x):
    smooth = NoiseTunnel(LayerGradCamPlusPlus(net, net.conv)).attribute(
        x, nt_type="smoothgrad", nt_samples=3, target=torch.tensor([0, 1, 2, 3])
    )
    assert smooth.shape == (4, 1, 8, 8) and torch.isfinite(smooth).all()


# --- 2. the metrics --------------------------------------------------------------------------


@pytest.fixture
def tiny():
    model, images, labels = tiny_setup(n=4)
    return model, images, labels


def _call(metric, model, images, labels, layer=None, maps_from="pre-softmax", **kwargs):
    return metric(
        model=model,
        x_batch=images.numpy() if isinstance(images, torch.Tensor) else images,
        y_batch=labels.numpy(),
        explain_func=cam_explain,
        explain_func_kwargs={
            "method": "Grad-CAM++",
            "layer": layer or model.layer,
            "maps_from": maps_from,
        },
        **kwargs,
    )


def _probability_twin(net: Net, outputs: str) -> Net:
    twin = copy.deepcopy(net)
    twin.outputs = outputs
    return twin


def test_probabilities_get_no_second_softmax(net, x):
    probs = _probability_twin(net, "probabilities")
    labels = torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="already look like probabilities .* softmax=False"):
        _call(AverageDrop(), probs, x, labels, layer=probs.conv)
    stated = _call(AverageDrop(), probs, x, labels, layer=probs.conv, softmax=False)
    expected = _call(AverageDrop(), net, x, labels, layer=net.conv, maps_from="post-softmax")
    assert stated[0] == pytest.approx(expected[0], rel=1e-5)


def test_probabilities_in_the_driver_and_the_post_softmax_maps(net, x):
    probs = _probability_twin(net, "probabilities")
    with pytest.raises(ValueError, match="already look like probabilities"):
        evaluate_methods(probs, probs.conv, x, progress=False)
    with pytest.raises(ValueError, match="already look like probabilities"):
        compute_cams(probs, probs.conv, x, torch.tensor([0, 1, 2, 3]), maps_from="post-softmax")
    stated = evaluate_methods(
        probs, probs.conv, x, softmax=False, maps_from=["pre-softmax"], progress=False
    )
    post = evaluate_methods(net, net.conv, x, maps_from=["post-softmax"], progress=False)
    torch.testing.assert_close(stated.y, post.y)
    for name in stated.methods:
        torch.testing.assert_close(stated.o["pre-softmax"][name], post.o["post-softmax"][name])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_probabilities_detected_in_low_precision_and_log_probabilities_pass(net, x, dtype):
    probs = _probability_twin(net, "probabilities").to(dtype)
    with pytest.raises(ValueError, match="already look like probabilities"):
        class_scores(probs, x.to(dtype))
    logs = _probability_twin(net, "log-probabilities")
    torch.testing.assert_close(class_scores(logs, x).value, class_scores(net, x).value)


def _bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "batches" in k}


def test_train_mode_model_is_evaluated_in_eval_mode_and_left_unchanged(net, x):
    labels = torch.tensor([0, 1, 2, 3])
    win = WinPercentage(against=["Grad-CAM", "HiResCAM"])
    expected = {
        "AD": _call(AverageDrop(), net, x, labels, layer=net.conv),
        "win": _call(win, net, x, labels, layer=net.conv),
        "maps": cam_explain(net, x.numpy(), labels.numpy(), method="Grad-CAM", layer=net.conv),
        "driver": evaluate_methods(net, net.conv, x, labels=labels, progress=False).o,
    }
    trained = copy.deepcopy(net).train()
    trained.fc.eval()  # a submodule's own mode must be restored too
    before = _bn_state(trained)
    got = {
        "AD": _call(AverageDrop(), trained, x, labels, layer=trained.conv),
        "win": _call(win, trained, x, labels, layer=trained.conv),
        "maps": cam_explain(
            trained, x.numpy(), labels.numpy(), method="Grad-CAM", layer=trained.conv
        ),
        "driver": evaluate_methods(trained, trained.conv, x, labels=labels, progress=False).o,
    }
    after = _bn_state(trained)
    assert all(torch.equal(before[k], after[k]) for k in before), "BatchNorm statistics changed"
    assert trained.training and trained.bn.training and not trained.fc.training
    assert got["AD"] == pytest.approx(expected["AD"]) and got["win"] == expected["win"]
    np.testing.assert_array_equal(got["maps"], expected["maps"])
    for source, methods in expected["driver"].items():
        for name, o in methods.items():
            torch.testing.assert_close(got["driver"][source][name], o)


def test_quantus_evaluate_leaves_a_train_mode_model_unchanged(net, x):
    trained = copy.deepcopy(net).train()
    before = _bn_state(trained)
    quantus.evaluate(
        metrics={"AD": AverageDrop(), "RP": RelativePerformance(baseline="Grad-CAM")},
        xai_methods={"Grad-CAM++": cam_explain},
        model=trained,
        x_batch=x.numpy(),
        y_batch=np.array([0, 1, 2, 3]),
        explain_func_kwargs={"layer": trained.conv},
        agg_func=lambda scores: scores[0],
        verbose=False,
    )
    assert all(torch.equal(before[k], v) for k, v in _bn_state(trained).items())
    assert trained.training


def test_float64_inputs_work_everywhere(tiny):
    """Quantus' own fixtures give float64 arrays; the model is float32."""
    model, images, labels = tiny
    x64 = images.double().numpy()
    explain = {"method": "HiResCAM", "layer": model.layer}
    maps32 = cam_explain(model, images.numpy(), labels.numpy(), **explain)
    maps64 = cam_explain(model, x64, labels.numpy(), **explain)
    np.testing.assert_array_equal(maps64, maps32)
    for metric in (AverageDrop(), RelativePerformance(baseline="Grad-CAM")):
        assert _call(metric, model, x64, labels) == pytest.approx(
            _call(metric, model, images, labels), rel=1e-12
        )
    a64 = AverageDrop()(model, x64, labels.numpy(), maps32.astype(np.float64))
    assert a64 == pytest.approx(AverageDrop()(model, images.numpy(), labels.numpy(), maps32))
    driver64 = evaluate_methods(model, model.layer, images.double(), progress=False)
    driver32 = evaluate_methods(model, model.layer, images, progress=False)
    torch.testing.assert_close(driver64.y, driver32.y)
    table = quantus.evaluate(
        metrics={"AD": AverageDrop()},
        xai_methods={"Grad-CAM": cam_explain},
        model=model,
        x_batch=x64,
        y_batch=labels.numpy(),
        explain_func_kwargs={"layer": model.layer},
        agg_func=lambda scores: scores[0],
        verbose=False,
    )
    assert np.isfinite(table["Grad-CAM"]["AD"])


def test_uint8_images_are_taken_as_their_values(tiny):
    model, images, labels = tiny
    pixels = (images * 255).round().to(torch.uint8)
    maps = cam_explain(model, pixels.numpy(), labels.numpy(), method="Grad-CAM", layer=model.layer)
    expected = cam_explain(
        model, pixels.float().numpy(), labels.numpy(), method="Grad-CAM", layer=model.layer
    )
    np.testing.assert_array_equal(maps, expected)


@pytest.mark.parametrize("shape", [(4, 1, 8, 8), (4, 8, 8), (4, 1, 3, 5)])
def test_a_batch_of_any_resolution(tiny, shape):
    """The docs promise maps of any resolution: they are upsampled before Quantus checks them."""
    model, images, labels = tiny
    layer_maps = torch.rand(*shape, generator=torch.Generator().manual_seed(3))
    as_input = upsample_and_normalize(layer_maps.view(4, 1, *shape[-2:]), (16, 16)).numpy()
    for metric in (AverageDrop(), DeadZoneMass(unseen=bottom_rows(16, 16, 4))):
        got = metric(model, images.numpy(), labels.numpy(), layer_maps.numpy())
        assert got == pytest.approx(metric(model, images.numpy(), labels.numpy(), as_input))


def test_all_zero_a_batch_is_refused_by_quantus_but_one_zero_map_is_scored(tiny):
    """As the docs say: Quantus asserts on an all-zero a_batch before our code runs."""
    model, images, labels = tiny
    maps = np.random.default_rng(0).random((4, 1, 16, 16)).astype(np.float32)
    with pytest.raises(AssertionError, match="all equal to zero"):
        AverageDrop()(model, images.numpy(), labels.numpy(), np.zeros_like(maps))
    maps[2] = 0
    scores = AverageDrop(return_aggregate=False)(model, images.numpy(), labels.numpy(), maps)
    y = class_scores(model, images, labels)
    o = class_scores(model, torch.zeros_like(images[2:3]), labels[2:3])
    expected = 100 * max(0.0, float(y.value[2] - o.value[0])) / float(y.value[2])
    assert scores[2] == pytest.approx(expected, rel=1e-5)


def test_channel_last_inputs_with_channel_last_maps(tiny):
    """Quantus turns channel-last inputs channel-first but leaves a_batch as given."""
    model, images, labels = tiny
    maps = np.random.default_rng(1).random((4, 1, 16, 16)).astype(np.float32)
    expected = AverageDrop()(model, images.numpy(), labels.numpy(), maps)
    last = np.moveaxis(images.numpy(), 1, -1)
    assert AverageDrop()(model, last, labels.numpy(), np.moveaxis(maps, 1, -1)) == pytest.approx(
        expected
    )
    small = np.moveaxis(maps[:, :, ::4, ::4], 1, -1)  # (N, 4, 4, 1): any resolution here too
    assert np.isfinite(AverageDrop()(model, last, labels.numpy(), small)[0])


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ("nan", ValueError, "inputs contain NaN or inf"),
        ("empty", ValueError, "x_batch is empty"),
        ("float labels", TypeError, "integer class indices"),
        ("label out of range", ValueError, r"targets must lie in \[0, 5\)"),
    ],
)
def test_metric_inputs_named_in_our_terms(tiny, change, error, message):
    model, images, labels = tiny
    x, y = images.numpy().copy(), labels.numpy()
    maps = np.random.default_rng(2).random((4, 1, 16, 16)).astype(np.float32)
    if change == "nan":
        x[1, 0, 3, 3] = np.nan
    elif change == "empty":
        x, y, maps = x[:0], y[:0], maps[:0]
    elif change == "float labels":
        y = y.astype(np.float32)
    else:
        y = np.array([0, 1, 2, 99])
    with pytest.raises(error, match=message):
        AverageDrop()(model, x, y, maps)


def test_method_lists_given_as_one_string_in_the_metrics(tiny):
    model, images, _ = tiny
    with pytest.raises(TypeError, match="against must be a sequence"):
        WinPercentage(against="Grad-CAM")
    with pytest.raises(TypeError, match="not a single string"):
        evaluate_methods(model, model.layer, images, methods="Grad-CAM", progress=False)


# --- 3. the application: images of every mode ------------------------------------------------

PIL_Image = pytest.importorskip("PIL.Image")
images_module = pytest.importorskip("camplus_app.images")
to_rgb, load_images = images_module.to_rgb, images_module.load_images
WHITE = 255


def _gray_rgb(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=-1).astype(np.uint8)


RAMP8 = np.arange(0, 256, 5, dtype=np.uint8).reshape(4, 13)  # 8-bit values 0..255


@pytest.mark.parametrize(
    ("suffix", "make"),
    [
        (".png", lambda: PIL_Image.fromarray(RAMP8.astype(np.uint16) * 257)),  # I;16 PNG
        (".tif", lambda: PIL_Image.fromarray(RAMP8.astype(np.uint16) * 257)),  # I;16 TIFF
        (".tif", lambda: PIL_Image.fromarray(RAMP8.astype(np.int32) * 257)),  # I, 16-bit values
        (".tif", lambda: PIL_Image.fromarray(RAMP8.astype(np.float32) / 255)),  # F in [0, 1]
        (".png", lambda: PIL_Image.fromarray(RAMP8)),  # L
        (".png", lambda: PIL_Image.fromarray(RAMP8).convert("P")),  # palette
        (".tif", lambda: PIL_Image.fromarray(_gray_rgb(RAMP8)).convert("CMYK")),
        (".png", lambda: PIL_Image.fromarray(RAMP8).convert("LA")),  # opaque alpha
    ],
)
def test_every_mode_from_a_file_is_the_picture_a_viewer_shows(tmp_path, suffix, make):
    """16-bit and float images are scaled by their range: Pillow's convert would clip to white."""
    image = make()
    path = tmp_path / f"image{suffix}"
    image.save(path)
    (loaded,) = load_images([path]).values()
    assert loaded.mode == "RGB"
    np.testing.assert_allclose(np.asarray(loaded, dtype=float), _gray_rgb(RAMP8), atol=1)


def test_sixteen_bit_is_scaled_not_clipped():
    image = PIL_Image.fromarray(np.array([[0, 1000, 32768, 65535]], dtype=np.uint16))
    assert np.asarray(image.convert("RGB"))[0, :, 0].tolist() == [0, 255, 255, 255]  # Pillow
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == [0, 4, 128, 255]
    for mode in ("I;16B", "I;16L"):
        assert np.asarray(to_rgb(image.convert("I").convert(mode)))[0, :, 0].tolist() == [
            0,
            4,
            128,
            255,
        ]


@pytest.mark.parametrize(
    ("mode", "values", "message"),
    [
        ("F", [[0.0, 1.5]], r"float image \(mode F\) with values in \[0, 1.5\]"),
        ("F", [[-0.5, 0.5]], r"values in \[-0.5, 0.5\]"),
        ("F", [[0.0, float("nan")]], "a float image"),
        ("I", [[0, 70000]], r"integer image \(mode I\) with values in \[0, 7e\+04\]"),
        ("I", [[-1, 5]], "integer image"),
    ],
)
def test_images_without_a_display_range_are_refused(tmp_path, mode, values, message):
    dtype = np.float32 if mode == "F" else np.int32
    image = PIL_Image.fromarray(np.array(values, dtype=dtype))
    with pytest.raises(ValueError, match=message):
        to_rgb(image)
    path = tmp_path / "odd.tif"
    image.save(path)
    with pytest.raises(ValueError, match=r"odd.tif: .*rescale it first"):
        load_images([path])


def test_transparency_is_composited_over_white():
    rgba = PIL_Image.new("RGBA", (3, 1))
    rgba.putdata([(200, 0, 0, 255), (200, 0, 0, 0), (200, 0, 0, 128)])
    got = np.asarray(to_rgb(rgba))[0].tolist()
    half = round(200 * 128 / 255 + WHITE * 127 / 255)
    assert got[0] == [200, 0, 0] and got[1] == [WHITE] * 3
    assert got[2][0] == pytest.approx(half, abs=1) and got[2][1] == pytest.approx(127, abs=1)
    la = PIL_Image.new("LA", (1, 1), (0, 0))  # black, fully transparent
    assert np.asarray(to_rgb(la)).tolist() == [[[WHITE] * 3]]
    assert np.asarray(to_rgb(la.convert("La"))).tolist() == [[[WHITE] * 3]]


def test_palette_and_grayscale_with_a_transparent_colour_key(tmp_path):
    palette = PIL_Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.putdata([0, 1])
    palette.info["transparency"] = 0  # index 0 is transparent
    path = tmp_path / "keyed.png"
    palette.save(path, transparency=0)
    (loaded,) = load_images([path]).values()
    assert np.asarray(loaded)[0].tolist() == [[WHITE] * 3, [10, 200, 30]]
    assert np.asarray(to_rgb(palette.convert("PA")))[0].tolist() == [[WHITE] * 3, [10, 200, 30]]


@pytest.mark.parametrize("mode", ["1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"])
def test_other_modes_go_through_pillow(mode):
    white = PIL_Image.new("RGB", (2, 2), (255, 255, 255))
    converted = white.convert(mode) if mode not in ("LAB",) else PIL_Image.new("LAB", (2, 2))
    if mode == "LAB":
        converted = PIL_Image.new("LAB", (2, 2), (255, 128, 128))
    got = np.asarray(to_rgb(converted))
    assert got.shape == (2, 2, 3) and got.min() >= 254


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo stored sideways with an EXIF rotation is shown upright by viewers."""
    stored = PIL_Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 40, 10))  # red top half as stored
    exif = PIL_Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    stored.save(path, exif=exif, quality=95)
    (shown,) = load_images([path]).values()
    pixels = np.asarray(shown).astype(int)
    assert shown.size == (20, 40)
    assert pixels[20, 15, 0] > 200 and pixels[20, 4, 2] > 200  # red on the right after rotation


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels: Pillow checks the size when opening it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_and_empty_files_are_named(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(30000, 30000))
    with pytest.raises(ValueError, match=r"image too large: .*bomb.png .*MAX_IMAGE_PIXELS"):
        load_images([bomb])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="not a readable image: .*empty.png"):
        load_images([empty])


# --- 3. the application: the camplus command ------------------------------------------------

zoo = pytest.importorskip("camplus_app.zoo")
cli = pytest.importorskip("camplus_app.cli")
pytest.importorskip("torchvision")


def _tiny_classifier(layer: str | None = None):
    """A 1000-class conv net with the ImageNet names and torchvision's eval transform (64/56)."""
    from collections import OrderedDict

    torch.manual_seed(0)
    net = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, 8, 3, stride=4),
            relu=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            fc=nn.Linear(8, 1000),
        )
    ).eval()
    transform = zoo._eval_transform(64, 56, "bilinear")
    return zoo._classifier("tiny", net, layer or "relu", transform, [0.5] * 3, [0.5] * 3, 1000)


@pytest.fixture
def tiny_model(monkeypatch):
    def load(name=None, weights=None, layer=None):
        if weights is not None:
            return real(name, weights, layer)
        return _tiny_classifier(layer)

    real = zoo.load_classifier
    monkeypatch.setattr(zoo, "load_classifier", load)


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    PIL_Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    ).save(path)
    return path


def _fails(argv: list[str], message: str, capsys, out: Path) -> None:
    """One line on stderr naming the problem, exit status 2, nothing written."""
    status = cli.main([*argv, "--quiet", "--output", str(out)] if "--output" not in argv else argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("camplus: error: "), err
    assert re.search(message, err), err
    assert not out.exists() or not any(out.iterdir())


def _weights_files(tmp_path: Path) -> dict[str, Path]:
    from torchvision.models import resnet18

    files = {}
    files["random bytes"] = tmp_path / "random.pth"
    files["random bytes"].write_bytes(np.random.default_rng(0).bytes(2000))
    good = tmp_path / "good.pth"
    torch.save(resnet18(num_classes=10).state_dict(), good)
    files["truncated"] = tmp_path / "truncated.pth"
    files["truncated"].write_bytes(good.read_bytes()[:5000])
    files["text"] = tmp_path / "text.pth"
    files["text"].write_text('{"fc.weight": [1, 2]}')
    files["a tensor"] = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), files["a tensor"])
    files["another architecture"] = good
    return files


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("random bytes", "not a torch.save file of tensors"),
        ("truncated", "cannot read weights from .*truncated.pth: the file is damaged"),
        ("text", "not a torch.save file of tensors"),
        ("a tensor", "does not hold a state dict"),
        ("another architecture", r"do not fit torchvision 'resnet50' \(Missing key"),
    ],
)
def test_corrupt_or_foreign_weights(tmp_path, capsys, photo, case, message):
    weights = _weights_files(tmp_path)[case]
    argv = ["explain", str(photo), "--model", "torchvision/resnet50", "--weights", str(weights)]
    _fails(argv, message, capsys, tmp_path / "out")


def test_images_the_command_cannot_use(tmp_path, capsys, tiny_model):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(30000, 30000))
    _fails(["explain", str(bomb)], "image too large", capsys, tmp_path / "out")
    strip = tmp_path / "strip.png"
    PIL_Image.new("RGB", (5000, 2)).save(strip)
    _fails(["explain", str(strip)], "5000 x 2 pixels is too elongated", capsys, tmp_path / "out")
    floats = tmp_path / "floats.tif"
    PIL_Image.fromarray(np.full((8, 8), 7.5, np.float32)).save(floats)
    _fails(["compare", str(floats)], r"values in \[7.5, 7.5\]", capsys, tmp_path / "out")


def test_output_that_cannot_be_created_or_written(tmp_path, capsys, photo, tiny_model):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    _fails(
        ["explain", str(photo), "--output", str(a_file / "sub")],
        "a-file is a file, not a folder",
        capsys,
        a_file / "sub",
    )
    if Path("/proc/self").exists():  # a file system where nothing can be created
        _fails(
            ["explain", str(photo), "--output", "/proc/camplus-out", "-q"],
            "cannot be written",
            capsys,
            Path("/proc/camplus-out"),
        )
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        _fails(["explain", str(photo)], "cannot be written", capsys, locked / "out")


@pytest.mark.parametrize("command", ["explain", "compare"])
@pytest.mark.parametrize("layer", ["fc", "flat"])
def test_a_layer_without_an_image_shaped_output(
    tmp_path, capsys, photo, tiny_model, command, layer
):  # noqa: E501
    _fails(
        [command, str(photo), "--layer", layer],
        r"without spatial dimensions",
        capsys,
        tmp_path / "out",
    )


def test_a_one_by_one_layer_gives_a_flat_heatmap_not_speckle(tmp_path, photo, monkeypatch):
    drawn = {}
    monkeypatch.setattr(zoo, "load_classifier", lambda *a, **k: _tiny_classifier("pool"))
    figures = pytest.importorskip("camplus_app.figures")
    real = figures.overlay_figure

    def spy(image, heatmaps, title):
        drawn.update(heatmaps)
        return real(image, heatmaps, title)

    monkeypatch.setattr(figures, "overlay_figure", spy)
    out = tmp_path / "out"
    assert cli.main(["explain", str(photo), "--quiet", "--output", str(out)]) == 0
    for name, heat in drawn.items():
        assert heat.unique().numel() == 1, name


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("cuda:7", "device 'cuda:7' (is not available|cannot be used)"),
        ("meta", "device 'meta' holds no data"),
        ("xpu", "device 'xpu' (is not available|cannot be used)"),
        ("warp9", "unknown device 'warp9'"),
    ],
)
def test_devices_torch_cannot_use(tmp_path, capsys, photo, tiny_model, device, message):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    if device == "xpu" and hasattr(torch, "xpu") and torch.xpu.is_available():
        pytest.skip("this machine has an XPU")
    _fails(["explain", str(photo), "--device", device], message, capsys, tmp_path / "out")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("cardigan", r"'cardigan' matches 2 classes .*264 \('Cardigan'\), 474 \('cardigan'\)"),
        ("CARDIGAN", "matches 2 classes"),
        ("tabby cat", r"unknown class 'tabby cat' .*closest: 'tabby'"),
        ("-1", "class index -1 is out of range"),
        ("", "unknown class ''"),
    ],
)
def test_class_names_that_match_several_or_none(
    tmp_path, capsys, photo, tiny_model, target, message
):  # noqa: E501
    _fails(["explain", str(photo), "--target", target], message, capsys, tmp_path / "out")


def test_an_unexpected_failure_is_one_line_unless_asked(tmp_path, capsys, photo, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("internal")

    monkeypatch.setattr(zoo, "load_classifier", broken)
    _fails(["explain", str(photo)], "KeyError: 'internal'", capsys, tmp_path / "out")
    monkeypatch.setenv("CAMPLUS_TRACEBACK", "1")
    with pytest.raises(KeyError, match="internal"):
        cli.main(["explain", str(photo), "--quiet", "--output", str(tmp_path / "out")])


def test_sixteen_bit_photograph_gets_the_class_of_the_eight_bit_one(tmp_path):
    """The headline case: Pillow's conversion made a 16-bit PNG all white (a wrong class)."""
    camera = np.asarray(images_module.sample_images(["camera"])["camera"])[..., 0]
    PIL_Image.fromarray(camera).save(tmp_path / "eight.png")
    PIL_Image.fromarray(camera.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    out = tmp_path / "out"
    argv = ["explain", str(tmp_path / "eight.png"), str(tmp_path / "sixteen.png")]
    assert cli.main([*argv, "--methods", "gradcam", "-q", "--output", str(out)]) == 0
    with (out / "predictions.csv").open() as file:
        rows = {row["image"]: row for row in csv.DictReader(file)}
    assert rows["sixteen"]["class_name"] == rows["eight"]["class_name"]
    assert rows["sixteen"]["probability"] == rows["eight"]["probability"]


def test_one_score_for_the_whole_batch_is_still_accepted(net, x):
    """Captum allows a forward that sums the batch's scores; the gradients are per example."""
    summed = LayerGradCam(lambda inp: net(inp)[:, 2].sum().view(1), net.conv).attribute(x)
    torch.testing.assert_close(summed, LayerGradCam(net, net.conv).attribute(x, target=2))
    with pytest.raises(ValueError, match="returns a 0-dim scalar"):
        LayerGradCam(lambda inp: net(inp)[:, 2].sum(), net.conv).attribute(x)
