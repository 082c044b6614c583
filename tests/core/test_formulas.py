"""Each method against the independent float64 reference of its equation
(``captum_camplus.testing.reference``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import captum_camplus.testing.reference as ref
from captum_camplus import (
    AlphaOptions,
    LayerGradCam,
    LayerGradCamPlus,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    alpha_diagnostics,
)

REFERENCES = {
    LayerGradCam: ref.grad_cam,
    LayerGradCamPlus: ref.grad_cam_plus,
    LayerHiResCam: ref.hires_cam,
    # the class defaults: eq. 13, lambda = 1, denominators clamped at 2
    LayerGradCamPlusPlus: lambda A, g: ref.grad_cam_pp(A, g, form="simplified", stabilizer="clamp"),
}

PP_OPTIONS = [
    dict(alpha="simplified"),
    dict(alpha="paper"),
    dict(alpha="constant"),
    dict(alpha="simplified", exponent_scale=0.25),
    dict(alpha="simplified", normalize_alpha=True),
    dict(alpha="simplified", stabilizer="zero"),
    dict(alpha="paper", stabilizer="clamp", min_denominator=1.0),
    dict(alpha="simplified", min_denominator=1.0),
]


def _reference_options(options: dict) -> dict:
    """Translate the class options into the reference's arguments."""
    return dict(
        form=options.get("alpha", "simplified"),
        lam=options.get("exponent_scale", 1.0),
        stabilizer=options.get("stabilizer", "clamp"),
        min_denominator=options.get("min_denominator", 2.0),
        normalize=options.get("normalize_alpha", False),
    )


def hand_made(signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Small activations/gradients with zeros, both signs, and (if signed) S_k < 0 channels."""
    gen = torch.Generator().manual_seed(3)
    A = torch.rand(2, 4, 3, 3, generator=gen, dtype=torch.float64) * 3
    if signed:
        A = A - 2.0  # most channel sums negative: denominators cross zero
    g = torch.randn(2, 4, 3, 3, generator=gen, dtype=torch.float64)
    g[0, 0, 0, :] = 0.0
    g[1, 2] = -g[1, 2].abs()  # a channel without positive gradient
    return A, g


def _map(cls, A, g, **options):
    return cls(torch.nn.Identity(), torch.nn.Identity(), **options).map_from_layer(A, g)


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("cls", [LayerGradCam, LayerGradCamPlus, LayerHiResCam])
def test_simple_methods_match_reference_on_hand_made_tensors(cls, signed):
    A, g = hand_made(signed)
    np.testing.assert_allclose(_map(cls, A, g).numpy(), REFERENCES[cls](A, g), rtol=1e-12)


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("options", PP_OPTIONS, ids=str)
def test_grad_cam_pp_matches_reference_on_hand_made_tensors(options, signed):
    A, g = hand_made(signed)
    expected = ref.grad_cam_pp(A, g, **_reference_options(options))
    np.testing.assert_allclose(
        _map(LayerGradCamPlusPlus, A, g, **options).numpy(), expected, rtol=1e-10, atol=1e-12
    )


def test_hand_made_signed_tensors_do_cross_the_pole():
    """The signed case above is only meaningful if some denominators are below 2 and below 0."""
    A, g = hand_made(signed=True)
    S = A.sum(dim=(2, 3), keepdim=True)
    d = (2 + S * g)[g > 0]
    assert (d < 0).any() and (d < 2).sum() > 5


def test_stabilizer_none_matches_raw_formula_and_reports_unstable_entries():
    A, g = hand_made(signed=True)
    method = LayerGradCamPlusPlus(torch.nn.Identity(), torch.nn.Identity(), stabilizer="none")
    cam = method.map_from_layer(A, g)
    raw = ref.grad_cam_pp(A, g, form="simplified", stabilizer="none")
    np.testing.assert_allclose(cam.numpy(), raw, rtol=1e-10)
    S = A.sum(dim=(2, 3), keepdim=True)
    d = 2 + S * g
    summary = method.last_diagnostics.summary()
    assert summary["positive"] == (g > 0).sum().item()
    assert summary["unstable"] == ((g > 0) & (d < 2)).sum().item() > 0
    assert summary["raw_min"] == pytest.approx((1 / d)[g > 0].min().item())
    assert summary["raw_max"] == pytest.approx((1 / d)[g > 0].max().item())


def test_default_options_report_diagnostics_when_read():
    """The default options skip forming alpha; the diagnostics must still be those of eq. 13."""
    A, g = hand_made(signed=True)
    method = LayerGradCamPlusPlus(torch.nn.Identity(), torch.nn.Identity())
    method.map_from_layer(A, g)
    S = A.sum(dim=(2, 3), keepdim=True)
    d = (2 + S * g)[g > 0]
    summary = method.last_diagnostics.summary()
    assert summary["positive"] == (g > 0).sum().item()
    assert summary["unstable"] == (d < 2).sum().item() > 0
    assert summary["raw_min"] == pytest.approx((1 / d).min().item())
    assert summary["max"] == pytest.approx(0.5)  # clamped at 1 / min_denominator
    method.map_from_layer(A.abs(), g)  # a second call replaces the first call's diagnostics
    assert method.last_diagnostics.summary()["unstable"] == 0


def test_raw_alphas_are_eq_13_before_the_stabilizer():
    """What the alpha histogram's tail shows: 1 / (2 + S_k g) where g > 0, whatever the
    stabilizer, 0 elsewhere; the alphas used stay clamped."""
    A, g = hand_made(signed=True)
    method = LayerGradCamPlusPlus(torch.nn.Identity(), torch.nn.Identity())  # clamp
    S = A.double().sum(dim=(2, 3), keepdim=True)
    expected = torch.where(g > 0, 1 / (2 + S * g.double()), torch.zeros((), dtype=torch.float64))
    torch.testing.assert_close(method.raw_alphas(A, g).double(), expected)
    assert float(method.raw_alphas(A, g).min()) < 0 <= float(method.alphas(A, g).min())
    assert float(method.alphas(A, g).max()) <= 0.5


def _double_model(model):
    import copy

    return copy.deepcopy(model).double()


LAYERS = {
    "resnet18.layer4": ("resnet18", lambda m: m.layer4),
    "resnet18.layer4[1].bn2 (signed)": ("resnet18", lambda m: m.layer4[1].bn2),
    "vgg11.features[19] (ReLU)": ("vgg11", lambda m: m.features[19]),
    "vgg11.features[18] (conv, signed)": ("vgg11", lambda m: m.features[18]),
}


@pytest.mark.parametrize("layer_name", list(LAYERS))
@pytest.mark.parametrize("cls", list(REFERENCES))
def test_float32_models_match_float64_reference(cls, layer_name, request, images):
    """The float32 map against eq. 1-4/9 evaluated in float64 on float64 activations/gradients."""
    model_name, pick = LAYERS[layer_name]
    model = request.getfixturevalue(model_name)
    model64 = _double_model(model)
    target = [1, 4, 7]
    A64, g64 = ref.capture_layer(model64, pick(model64), images.double(), target)
    expected = REFERENCES[cls](A64, g64)
    cam = cls(model, pick(model)).attribute(images, target=target).detach()
    assert cam.dtype == torch.float32 and cam.shape == expected.shape
    scale = np.abs(expected).max()
    deviation = np.abs(cam.double().numpy() - expected).max() / scale
    assert deviation < 1e-4, f"max deviation {deviation:.3g} of the map's scale"

    # The same class on the float64 model reproduces the reference to rounding.
    cam64 = cls(model64, pick(model64)).attribute(images.double(), target=target).detach()
    np.testing.assert_allclose(cam64.numpy(), expected, rtol=1e-9, atol=1e-12 * scale)


@pytest.mark.parametrize("options", PP_OPTIONS, ids=str)
def test_alpha_function_and_diagnostics_are_pure_and_match_reference(options):
    """The alphas are a function of (lambda S_k, ReLU(g), options): the same on (A, g) directly
    and in the reference, and their diagnostics the same after a call; a call changes nothing."""
    A, g = hand_made(signed=True)
    alpha_options = AlphaOptions(
        options.get("alpha", "simplified"),
        options.get("exponent_scale", 1.0),
        options.get("normalize_alpha", False),
        options.get("stabilizer", "clamp"),
        options.get("min_denominator", 2.0),
    )
    expected = ref.grad_cam_pp_alphas(A, g, **_reference_options(options))
    direct = alpha_diagnostics(A, g, alpha_options).summary()
    used = expected[(g > 0).numpy()]
    assert (direct["min"], direct["max"]) == pytest.approx((used.min(), used.max()), rel=1e-10)

    method = LayerGradCamPlusPlus(torch.nn.Identity(), torch.nn.Identity(), **options)
    assert method.last_diagnostics is None
    before = method.map_from_layer(A, g)
    assert method.last_diagnostics.summary() == direct
    torch.testing.assert_close(method.map_from_layer(A, g), before, rtol=0, atol=0)
    np.testing.assert_allclose(method.alphas(A, g).numpy(), expected, rtol=1e-10, atol=0)


@pytest.mark.parametrize(
    "options, error",
    [
        (dict(alpha="eq13"), ValueError),
        (dict(stabilizer="eps"), ValueError),
        (dict(exponent_scale=0.0), ValueError),
        (dict(exponent_scale=float("nan")), ValueError),
        (dict(min_denominator=-1.0), ValueError),
        (dict(min_denominator="2"), TypeError),
        (dict(normalize_alpha="yes"), TypeError),
    ],
    ids=str,
)
def test_alpha_options_are_checked_when_built(options, error):
    with pytest.raises(error):
        LayerGradCamPlusPlus(torch.nn.Identity(), torch.nn.Identity(), **options)
