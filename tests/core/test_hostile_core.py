"""Hostile input to the attribution API: every case gets the right answer or an error in our terms.

Each numeric case is checked against an independent float64 computation
(``captum_camplus/testing/reference.py``) or against the same computation on ordinary input. The
fixtures ``net`` (conv, BatchNorm with foreign statistics, ReLU) and ``x`` are in ``conftest.py``.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from captum.attr import NoiseTunnel
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
    ("option", "value", "error", "message"),
    [
        ("exponent_scale", float("inf"), ValueError, None),
        ("exponent_scale", float("nan"), ValueError, None),
        ("exponent_scale", 0, ValueError, None),
        ("exponent_scale", -1.0, ValueError, None),
        ("exponent_scale", "1", TypeError, None),
        ("exponent_scale", True, TypeError, None),
        ("min_denominator", float("inf"), ValueError, None),
        ("min_denominator", None, TypeError, None),
        ("normalize_alpha", "no", TypeError, None),
        ("normalize_alpha", 1, TypeError, None),
        ("alpha", None, ValueError, None),
        ("alpha", ["paper"], ValueError, None),
        ("stabilizer", 0, ValueError, None),
        ("alpha", "exact", ValueError, "alpha must be one of"),
        ("stabilizer", "eps", ValueError, "stabilizer must be one of"),
        ("min_denominator", -1, ValueError, None),
    ],
)
def test_options_that_cannot_work_are_refused_at_construction(net, option, value, error, message):
    with pytest.raises(error, match=message or option):
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


def test_unknown_method_names_are_named(net):
    with pytest.raises(ValueError, match="unknown CAM method 'fancycam'"):
        LayerCams(net, net.conv, ["Grad-CAM", "fancycam"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"relu_attributions": "no"}, "relu_attributions must be True or False"),
        ({"attr_dim_summation": None}, "attr_dim_summation must be True or False"),
        ({"attribute_to_layer_input": 1}, "attribute_to_layer_input must be True or False"),
        ({"grad_kwargs": [("retain_graph", True)]}, "grad_kwargs must be a dict"),
        ({"grad_kwargs": 0}, "grad_kwargs must be a dict"),
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


def test_one_score_for_the_whole_batch_is_still_accepted(net, x):
    """Captum allows a forward that sums the batch's scores; the gradients are per example."""
    summed = LayerGradCam(lambda inp: net(inp)[:, 2].sum().view(1), net.conv).attribute(x)
    torch.testing.assert_close(summed, LayerGradCam(net, net.conv).attribute(x, target=2))
    with pytest.raises(ValueError, match="returns a 0-dim scalar"):
        LayerGradCam(lambda inp: net(inp)[:, 2].sum(), net.conv).attribute(x)


# --- merged from test_errors.py: misuse every method refuses ---------------------------------


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("targets", [[0, 1], [0, 1, 2, 3, 4], torch.tensor([1, 2, 3])])
def test_target_count_different_from_batch(cls, net, x, targets):
    with pytest.raises(ValueError, match=r"got \d targets for a batch of 4 examples"):
        cls(net, net.conv).attribute(x, target=targets)


@pytest.mark.parametrize("cls", ALL)
def test_layer_not_called_by_forward(cls, net, x):
    net.unused = nn.Conv2d(6, 6, 1)  # a submodule the forward never calls
    with pytest.raises(ValueError, match="Conv2d was not called by the forward pass"):
        cls(net, net.unused).attribute(x, target=0)


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs(cls, net, x, bad):
    x[2, 1, 3, 3] = bad
    with pytest.raises(ValueError, match=r"inputs \[0\] contain NaN or inf"):
        cls(net, net.conv).attribute(x, target=0)


@pytest.mark.parametrize("cls", ALL)
def test_inference_mode(cls, net, x):
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        cls(net, net.conv).attribute(x, target=0)
    with torch.inference_mode():
        frozen = x.clone()
    with pytest.raises(RuntimeError, match="created under torch.inference_mode"):
        cls(net, net.conv).attribute(frozen, target=0)


@pytest.mark.parametrize("cls", ALL)
def test_no_grad_context_is_fine(cls, net, x):
    with torch.no_grad():
        out = cls(net, net.conv).attribute(x, target=0)
    assert all(torch.isfinite(m).all() for m in _maps(out))


def test_stabilizer_none_raises_on_an_exact_pole():
    """S_k = -2, g = 1: 2 + S_k g = 0 exactly."""
    A = torch.tensor([[[[-1.0, -1.0]]]])
    g = torch.tensor([[[[1.0, 0.5]]]])
    method = LayerGradCamPlusPlus(IDENTITY, IDENTITY, stabilizer="none")
    with pytest.raises(FloatingPointError, match="denominator .* is exactly 0"):
        method.map_from_layer(A, g)
    for stabilizer in ("clamp", "zero"):
        cam = LayerGradCamPlusPlus(IDENTITY, IDENTITY, stabilizer=stabilizer)
        assert torch.isfinite(cam.map_from_layer(A, g)).all()


@pytest.mark.parametrize("cls", ALL)
def test_zero_gradients_give_zero_maps_not_nan(cls, net, x):
    with torch.no_grad():
        net.fc.weight[3].zero_()  # class 3 does not depend on anything
    with pytest.warns(UserWarning, match="gradient is exactly zero on the whole grid"):
        out = cls(net, net.conv).attribute(x, target=3)
    for cam in _maps(out):
        assert torch.equal(cam, torch.zeros_like(cam))
        heat = upsample_and_normalize(cam, x.shape[-2:])
        assert torch.equal(heat, torch.zeros(4, 1, *x.shape[-2:]))


def test_maps_are_finite_on_a_signed_layer_with_extreme_inputs(net):
    x = torch.randn(4, 3, 6, 6) * 1e4
    for stabilizer in ("clamp", "zero"):
        cam = LayerGradCamPlusPlus(net, net.conv, stabilizer=stabilizer).attribute(x, target=1)
        assert torch.isfinite(cam).all()
