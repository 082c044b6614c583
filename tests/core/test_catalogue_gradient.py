"""The gradient family of the catalogue (XGrad-CAM, LayerCAM, element-wise Grad-CAM, EigenCAM,
EigenGrad-CAM): float64 references, pytorch-grad-cam's and torchcam's layer maps, one pass, and
the default set of methods that adding them leaves alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import captum_camplus.testing.reference as ref
from captum_camplus import (
    DEFAULT_METHODS,
    METHODS,
    LayerCams,
    LayerEigenCam,
    LayerEigenGradCam,
    LayerElementwiseGradCam,
    LayerLayerCam,
    LayerXGradCam,
    register_method,
)
from captum_camplus.utils import resolve_methods

CLASSES = {
    "XGrad-CAM": LayerXGradCam,
    "LayerCAM": LayerLayerCam,
    "Element-wise Grad-CAM": LayerElementwiseGradCam,
    "EigenCAM": LayerEigenCam,
    "EigenGrad-CAM": LayerEigenGradCam,
}
OPTIONS = [
    (LayerXGradCam, dict(eps=1e-7), lambda A, g: ref.xgrad_cam(A, g, eps=1e-7)),
    (LayerEigenCam, dict(centred=True), lambda A, g: ref.eigen_cam(A, g, centred=True)),
    (LayerEigenGradCam, dict(centred=True), lambda A, g: ref.eigen_grad_cam(A, g, centred=True)),
]


def hand_made(signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    A = torch.rand(3, 6, 4, 5, generator=gen, dtype=torch.float64) * 3
    if signed:
        A = A - 1.5
    A[0, 1] = 0.0  # a channel with no activation: XGrad-CAM's 0/0
    g = torch.randn(3, 6, 4, 5, generator=gen, dtype=torch.float64)
    return A, g


def _map(cls, A, g, **options):
    return cls(nn.Identity(), nn.Identity(), **options).map_from_layer(A, g)


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("name", list(CLASSES))
def test_each_method_matches_its_float64_reference(name, signed):
    A, g = hand_made(signed)
    expected = ref.CATALOGUE_FORMULAS[name](A, g)
    np.testing.assert_allclose(_map(CLASSES[name], A, g).numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls, options, formula", OPTIONS, ids=lambda o: str(o)[:40])
def test_the_peers_variants_match_their_reference(cls, options, formula):
    A, g = hand_made(signed=False)
    np.testing.assert_allclose(
        _map(cls, A, g, **options).numpy(), formula(A, g), rtol=1e-10, atol=1e-12
    )


def test_per_channel_terms_sum_to_the_map():
    A, g = hand_made(signed=True)
    for cls in CLASSES.values():
        method = cls(nn.Identity(), nn.Identity())
        terms = method.map_from_layer(A, g, attr_dim_summation=False)
        assert terms.shape == A.shape
        torch.testing.assert_close(terms.sum(1, keepdim=True), method.map_from_layer(A, g))


def test_eigen_sign_rule_makes_maps_of_non_negative_activations_non_negative():
    A, g = hand_made(signed=False)
    assert (_map(LayerEigenCam, A, g) >= 0).all()
    flipped = _map(LayerEigenCam, A, g)  # the sign does not depend on the SVD's choice
    torch.testing.assert_close(_map(LayerEigenCam, A.flip(0), g).flip(0), flipped)


@pytest.mark.parametrize("centred", [False, True])
@pytest.mark.parametrize("channels, grid", [(6, (4, 5)), (12, (2, 2)), (512, (7, 7))])
def test_eigen_direction_from_either_gram_matrix_matches_the_float64_svd(channels, grid, centred):
    """Fewer channels than positions takes X^T X, more takes X X^T: both equal the SVD's v_1."""
    gen = torch.Generator().manual_seed(channels)
    A = torch.rand(2, channels, *grid, generator=gen, dtype=torch.float64)
    g = torch.randn(2, channels, *grid, generator=gen, dtype=torch.float64)
    for cls, formula in ((LayerEigenCam, ref.eigen_cam), (LayerEigenGradCam, ref.eigen_grad_cam)):
        np.testing.assert_allclose(
            _map(cls, A, g, centred=centred).numpy(),
            formula(A, g, centred=centred),
            rtol=1e-9,
            atol=1e-12,
        )


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e30])
def test_eigen_in_float32_at_any_scale_matches_the_float64_reference(scale):
    """The Gram matrix is formed after dividing by the peak: no overflow or underflow."""
    A, g = hand_made(signed=False)
    expected = ref.eigen_cam(A, g)
    got = _map(LayerEigenCam, (A * scale).float(), g.float()).double() / scale
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_eigen_map_of_an_all_zero_example_is_zero_and_finite():
    A, g = hand_made(signed=False)
    A[1] = 0.0
    for cls in (LayerEigenCam, LayerEigenGradCam):
        cam = _map(cls, A, g)
        assert torch.isfinite(cam).all() and not cam[1].any()
        np.testing.assert_allclose(cam[0].numpy(), _map(cls, A[:1], g[:1])[0].numpy())


@pytest.mark.parametrize("cls", [LayerEigenCam, LayerEigenGradCam])
def test_eigen_refuses_a_layer_without_grid(cls):
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3))
    with pytest.raises(ValueError, match=r"need a layer with a spatial grid.*\(2, 5\)"):
        cls(model, model[2]).attribute(torch.randn(2, 3, 2, 2), target=0)


LAYERS = {
    "resnet18.layer4": ("resnet18", lambda m: m.layer4),
    "vgg11.features[18] (conv, signed)": ("vgg11", lambda m: m.features[18]),
}


@pytest.mark.parametrize("layer_name", list(LAYERS))
@pytest.mark.parametrize("name", list(CLASSES))
def test_float32_models_match_float64_reference(name, layer_name, request, images):
    model_name, pick = LAYERS[layer_name]
    model = request.getfixturevalue(model_name)
    model64 = __import__("copy").deepcopy(model).double()
    target = [1, 4, 7]
    A64, g64 = ref.capture_layer(model64, pick(model64), images.double(), target)
    expected = ref.CATALOGUE_FORMULAS[name](A64, g64)
    cam = CLASSES[name](model, pick(model)).attribute(images, target=target).detach()
    assert cam.dtype == torch.float32 and cam.shape == expected.shape
    if name == "XGrad-CAM" and "signed" in layer_name:
        # sum_ab A_ab of signed channels cancels: the float32 model's own A, g (not our
        # arithmetic) move w_k by ~1e-3, so the reference is evaluated on them instead
        A32, g32 = ref.capture_layer(model, pick(model), images, target)
        expected = ref.xgrad_cam(A32, g32)
        # and float32's own rounding of w_k is amplified by the condition number of the
        # denominator, kappa = max_k sum|A_k| / |sum A_k| (about 6e3 here): the bound is
        # float32's epsilon times kappa (7e-4), not a fixed 1e-4 (torch 2.14 gives 1.1e-4)
        kappa = (A32.abs().sum((2, 3)) / A32.sum((2, 3)).abs()).max().item()
        tolerance = max(1e-4, torch.finfo(torch.float32).eps * kappa)
    else:
        tolerance = 1e-4
    deviation = np.abs(cam.double().numpy() - expected).max() / np.abs(expected).max()
    assert deviation < tolerance, f"max deviation {deviation:.3g} of the map's scale"


# ------------------------------------------------------------------------------- the peers

PGC = {  # our class and options -> pytorch-grad-cam's class
    "XGradCAM": (LayerXGradCam, dict(eps=1e-7)),
    "LayerCAM": (LayerLayerCam, {}),
    "GradCAMElementWise": (LayerElementwiseGradCam, {}),
    "EigenCAM": (LayerEigenCam, dict(centred=True)),
    "EigenGradCAM": (LayerEigenGradCam, dict(centred=True)),
}


def _peer_case(resnet18, images):
    model = resnet18
    target = [1, 4, 7]
    A, g = ref.capture_layer(model, model.layer4, images, target)
    return model, A, g, target


@pytest.mark.parametrize("peer", list(PGC))
def test_pytorch_grad_cam_layer_maps_are_ours(peer, resnet18, images):
    """Their ``get_cam_image`` on the same (A, g), before their ReLU and upsampling; their
    EigenCAMs are our centred variant, up to the sign their SVD leaves free."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, A, g, target = _peer_case(resnet18, images)
    cls, options = PGC[peer]
    targets = [ClassifierOutputTarget(t) for t in target]
    with getattr(pytorch_grad_cam, peer)(model=model, target_layers=[model.layer4]) as cam:
        theirs = cam.get_cam_image(images, model.layer4, targets, A.numpy(), g.numpy(), False)
    ours = cls(model, model.layer4, **options).map_from_layer(A, g)[:, 0].numpy()
    if peer.startswith("Eigen"):
        signs = np.sign((theirs * ours).sum(axis=(1, 2), keepdims=True))
        theirs = theirs * signs
    scale = np.abs(ours).max()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-5 * scale)


@pytest.mark.parametrize("peer", ["XGradCAM", "LayerCAM"])
def test_torchcam_layer_maps_are_ours(peer, resnet18, images):
    import torchcam.methods

    model = resnet18
    target = [1, 4, 7]
    cls, options = {"XGradCAM": (LayerXGradCam, dict(eps=1e-8)), "LayerCAM": (LayerLayerCam, {})}[
        peer
    ]
    with getattr(torchcam.methods, peer)(model, model.layer4) as extractor:
        scores = model(images)
        theirs = extractor(class_idx=target, scores=scores, normalized=False)[0].detach()
    ours = cls(model, model.layer4, **options).attribute(
        images, target=target, relu_attributions=True
    )
    torch.testing.assert_close(ours[:, 0].detach(), theirs, rtol=0, atol=2e-5 * float(ours.max()))


# ------------------------------------------------------------------ one pass, default set


def test_all_methods_come_from_one_pass_and_equal_each_class(resnet18, images):
    target = [1, 4, 7]
    maps = LayerCams(resnet18, resnet18.layer4, methods=["all"]).attribute(images, target=target)
    assert list(maps) == list(METHODS)
    for name, cls in CLASSES.items():
        alone = cls(resnet18, resnet18.layer4).attribute(images, target=target)
        torch.testing.assert_close(maps[name], alone, rtol=1e-5, atol=1e-6)


def test_the_default_set_is_the_four_seed_methods():
    four = ["Grad-CAM", "Grad-CAM+", "Grad-CAM++", "HiResCAM"]
    assert list(DEFAULT_METHODS) == four == resolve_methods(None)
    assert list(LayerCams(nn.Identity(), nn.Identity()).methods) == four
    assert resolve_methods(["ALL"]) == list(METHODS)
    assert resolve_methods(["eigencam", "all", "Grad-CAM"])[:2] == ["EigenCAM", "Grad-CAM"]
    assert len(METHODS) == len(four) + len(CLASSES) + 2  # and Score-CAM, Ablation-CAM
    with pytest.raises(ValueError, match="stands for every registered method"):
        register_method("All")(LayerXGradCam)
    with pytest.raises(TypeError, match="not one string"):
        resolve_methods("all")
    with pytest.raises(KeyError):
        DEFAULT_METHODS["EigenCAM"]
