"""CAM methods on vision-transformer layers: timm ViT and distilled DeiT tokens, Swin channels-last.

Random-init timm models (no hub access). The float64 references take the layer's activations and
gradients from a float64 copy of the model (``captum_camplus/testing/reference.py``), restore the
patch grid with numpy here, independently of ``captum_camplus.layouts``, and evaluate the
equations of captum_camplus/testing/reference.py on it.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from captum.attr import NoiseTunnel
from torch import nn

import captum_camplus.testing.reference as ref
from captum_camplus import (
    CamAttribution,
    LayerCams,
    LayerGradCam,
    LayerGradCamPlus,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    TokenLayout,
    register_method,
    upsample_and_normalize,
)
from captum_camplus.layouts import ChannelsLastLayout
from captum_camplus.registry import _CLASSES, _KEYS

timm = pytest.importorskip("timm")


class LayerAbsGradCam(CamAttribution):
    """A user's method, stating only its weighting rule: w_k = mean_ij |g_ij| (registered by the
    ``user_method`` fixture)."""

    def weights(self, activation, gradient):
        return gradient.abs().mean(dim=tuple(range(2, gradient.dim())), keepdim=True)


def abs_grad_cam_reference(A, g) -> np.ndarray:
    A, g = np.asarray(A, np.float64), np.asarray(g, np.float64)
    n, k = A.shape[:2]
    out = np.zeros((n, 1, *A.shape[2:]))
    for i in range(n):
        for c in range(k):
            out[i, 0] += np.abs(g[i, c]).mean() * A[i, c]
    return out


REFERENCES = {
    "Grad-CAM": (LayerGradCam, ref.grad_cam),
    "Grad-CAM+": (LayerGradCamPlus, ref.grad_cam_plus),
    "Grad-CAM++": (
        LayerGradCamPlusPlus,
        lambda A, g: ref.grad_cam_pp(A, g, form="simplified", stabilizer="clamp"),
    ),
    "HiResCAM": (LayerHiResCam, ref.hires_cam),
    "AbsGrad-CAM": (LayerAbsGradCam, abs_grad_cam_reference),
}


@pytest.fixture
def user_method():
    """LayerAbsGradCam registered as "AbsGrad-CAM" for one test, the registry restored after."""
    before = (dict(_CLASSES), dict(_KEYS))
    register_method("AbsGrad-CAM")(LayerAbsGradCam)
    yield LayerAbsGradCam
    _CLASSES.clear()
    _CLASSES.update(before[0])
    _KEYS.clear()
    _KEYS.update(before[1])


CASES = ref.GRID_CASES
TARGET = [3, 7]


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    built = {}
    for name, case in CASES.items():
        torch.manual_seed(0)
        built[name] = timm.create_model(case.arch, pretrained=False, **dict(case.kwargs)).eval()
    return built


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))


_CAPTURES: dict[str, tuple[np.ndarray, np.ndarray, nn.Module]] = {}


def reference_grid(name: str, models, images) -> tuple[np.ndarray, np.ndarray, nn.Module]:
    """A and g on the grid, from the float64 model (computed once per model)."""
    if name not in _CAPTURES:
        case = CASES[name]
        model64 = copy.deepcopy(models[name]).double()
        layer = model64.get_submodule(case.layer)
        A, g = ref.capture_layer(model64, layer, images.double(), TARGET)
        _CAPTURES[name] = (ref.grid_reference(A, case), ref.grid_reference(g, case), model64)
    return _CAPTURES[name]


def _deviation(cam: torch.Tensor, expected: np.ndarray) -> float:
    return float(np.abs(cam.double().numpy() - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("method", list(REFERENCES))
@pytest.mark.parametrize("name", list(CASES))
def test_float32_maps_match_float64_reference_on_the_grid(name, method, models, images):
    case, model = CASES[name], models[name]
    cls, reference = REFERENCES[method]
    A64, g64, _ = reference_grid(name, models, images)
    expected = reference(A64, g64)
    cam = cls(model, model.get_submodule(case.layer), layout=case.layout).attribute(
        images, target=TARGET
    )
    assert cam.shape == (2, 1, *case.grid) and cam.dtype == torch.float32
    assert _deviation(cam, expected) < 1e-4


@pytest.mark.parametrize("name", list(CASES))
def test_float64_maps_of_every_method_from_one_pass_reproduce_the_reference(
    name, models, images, user_method
):
    case = CASES[name]
    A64, g64, model64 = reference_grid(name, models, images)
    # every registered method by default, the user's included
    cams = LayerCams(model64, model64.get_submodule(case.layer), layout=case.layout)
    assert set(cams.methods) >= set(REFERENCES)
    forwards = []
    handle = model64.register_forward_pre_hook(lambda *_: forwards.append(1))
    try:
        maps = cams.attribute(images.double(), target=TARGET)
    finally:
        handle.remove()
    assert len(forwards) == 1
    for method, (_, reference) in REFERENCES.items():
        expected = reference(A64, g64)
        np.testing.assert_allclose(
            maps[method].numpy(), expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max()
        )


def test_grad_cam_pp_sums_over_the_patch_grid_only(models, images):
    """S_k of eq. 13 excludes the prefix tokens: a huge class-token activation changes nothing."""
    model = models["vit_tiny"]
    layer = model.blocks[-1].norm1
    method = LayerGradCamPlusPlus(model, layer, layout="tokens")
    A = torch.randn(2, 197, 192, dtype=torch.float64)
    g = torch.randn(2, 197, 192, dtype=torch.float64)
    shifted = A.clone()
    shifted[:, 0] += 1e6
    torch.testing.assert_close(method.map_from_layer(shifted, g), method.map_from_layer(A, g))
    grid = lambda t: t[:, 1:].reshape(2, 14, 14, 192).permute(0, 3, 1, 2)  # noqa: E731
    expected = ref.grad_cam_pp(grid(A), grid(g), form="simplified", stabilizer="clamp")
    np.testing.assert_allclose(method.map_from_layer(A, g).numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("name", list(CASES))
def test_a_batch_equals_single_calls_and_maps_upsample(name, models, images):
    case, model = CASES[name], models[name]
    cams = LayerCams(model, model.get_submodule(case.layer), layout=case.layout)
    batch = cams.attribute(images, target=TARGET, relu_attributions=True)
    for i, target in enumerate(TARGET):
        single = cams.attribute(images[i : i + 1], target=target, relu_attributions=True)
        for method, cam in single.items():
            torch.testing.assert_close(cam, batch[method][i : i + 1], rtol=1e-4, atol=1e-6)
    heatmaps = upsample_and_normalize(batch["Grad-CAM++"], images.shape[-2:])
    assert heatmaps.shape == (2, 1, 224, 224)
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1


@pytest.mark.parametrize("name", list(CASES))
def test_hooks_are_removed_after_success_and_after_a_layout_error(name, models, images):
    case, model = CASES[name], models[name]
    layer = model.get_submodule(case.layer)
    hooks = lambda: sum(len(m._forward_hooks) for m in model.modules())  # noqa: E731
    before = hooks()
    LayerGradCamPlusPlus(model, layer, layout=case.layout).attribute(images[:1], target=1)
    assert hooks() == before
    wrong = "channels_last" if case.layout == "tokens" else TokenLayout(1, (7, 7))
    with pytest.raises(ValueError):
        LayerGradCamPlusPlus(model, layer, layout=wrong).attribute(images[:1], target=1)
    assert hooks() == before


@pytest.mark.parametrize("name", ["vit_tiny", "swin_tiny"])
def test_noise_tunnel(name, models, images):
    case, model = CASES[name], models[name]
    method = LayerHiResCam(model, model.get_submodule(case.layer), layout=case.layout)
    tunnel = NoiseTunnel(method)
    smooth = tunnel.attribute(images, nt_type="smoothgrad", nt_samples=2, stdevs=0.1, target=TARGET)
    assert smooth.shape == (2, 1, *case.grid) and torch.isfinite(smooth).all()
    zero_noise = tunnel.attribute(
        images, nt_type="smoothgrad", nt_samples=2, stdevs=0.0, target=TARGET
    )
    torch.testing.assert_close(zero_noise, method.attribute(images, target=TARGET))


def test_channel_maps_and_layer_input(models, images):
    model = models["vit_tiny"]
    block = model.blocks[-1]
    per_channel = LayerGradCam(model, block.norm1, layout="tokens").attribute(
        images, target=TARGET, attr_dim_summation=False
    )
    assert per_channel.shape == (2, 192, 14, 14)
    # norm1's input is the previous block's output, tokens as well
    from_input = LayerGradCam(model, block.norm1, layout="tokens").attribute(
        images, target=TARGET, attribute_to_layer_input=True
    )
    from_output = LayerGradCam(model, model.blocks[-2], layout="tokens").attribute(
        images, target=TARGET
    )
    torch.testing.assert_close(from_input, from_output)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_maps_are_finite_and_close_to_float32(dtype, models, images):
    model = models["vit_tiny"]
    half = copy.deepcopy(model).to(dtype)
    maps = LayerCams(half, half.blocks[-1].norm1, layout="tokens").attribute(
        images.to(dtype), target=TARGET, relu_attributions=True
    )
    full = LayerCams(model, model.blocks[-1].norm1, layout="tokens").attribute(
        images, target=TARGET, relu_attributions=True
    )
    for name, cam in maps.items():
        assert cam.dtype == dtype and cam.shape == (2, 1, 14, 14), name
        assert torch.isfinite(cam).all(), name
        assert (cam.float() - full[name]).abs().amax() <= 0.15 * full[name].abs().amax(), name


def test_a_reshape_callable_gives_the_same_maps_as_the_named_layout(models, images):
    """A pytorch-grad-cam ``reshape_transform`` works as the layout."""
    model = models["deit_tiny_distilled"]

    def reshape_transform(tensor, height=14, width=14):
        result = tensor[:, 2:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    layer = model.blocks[-1].norm1
    named = LayerGradCamPlusPlus(model, layer, layout="tokens").attribute(images, target=TARGET)
    called = LayerGradCamPlusPlus(model, layer, layout=reshape_transform).attribute(
        images, target=TARGET
    )
    torch.testing.assert_close(called, named)


def test_token_layout_from_model_reads_registers_and_wrappers():
    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, reg_tokens=4, depth=2, img_size=64
    ).eval()
    wrapped = nn.Sequential(nn.Identity(), vit)
    layer = vit.blocks[-1].norm1
    assert TokenLayout.from_model(wrapped, layer) == TokenLayout(5, (4, 4))
    cams = LayerCams(wrapped, layer, layout="tokens")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    maps = cams.attribute(x, target=[0, 1])
    A, g = ref.capture_layer(vit.double(), layer, x.double(), [0, 1])
    case = ref.GridCase("", "", "tokens", 5, (4, 4))
    expected = ref.grad_cam_plus(ref.grid_reference(A, case), ref.grid_reference(g, case))
    assert _deviation(maps["Grad-CAM+"], expected) < 1e-4
    dynamic = timm.create_model("vit_tiny_patch16_224", depth=1, dynamic_img_size=True)
    assert TokenLayout.from_model(dynamic) == TokenLayout(1, None)


def test_tokens_without_prefix_and_a_square_grid_inferred(models, images):
    """Swin's MLP branch sees flattened tokens (N, 49, C): TokenLayout(0) restores the 7x7 grid."""
    model = models["swin_tiny"]
    block = model.layers[-1].blocks[-1]
    flat = LayerGradCam(model, block.norm2, layout=TokenLayout(0)).attribute(images, target=TARGET)
    assert flat.shape == (2, 1, 7, 7)


@pytest.mark.parametrize("name", list(CASES))
def test_auto_layout_reads_the_model(name, models, images):
    case, model = CASES[name], models[name]
    layer = model.get_submodule(case.layer)
    auto = LayerGradCamPlus(model, layer, layout="auto").attribute(images[:1], target=1)
    named = LayerGradCamPlus(model, layer, layout=case.layout).attribute(images[:1], target=1)
    torch.testing.assert_close(auto, named, rtol=0, atol=0)


def test_auto_layout_on_swin_tokens_and_on_a_cnn(models, images):
    swin = models["swin_tiny"]
    norm2 = swin.layers[-1].blocks[-1].norm2  # (N, 49, 768): tokens, no prefix
    auto = LayerHiResCam(swin, norm2, layout="auto").attribute(images[:1], target=1)
    torch.testing.assert_close(
        auto, LayerHiResCam(swin, norm2, layout=TokenLayout(0, (7, 7))).attribute(images[:1], 1)
    )
    with pytest.raises(
        ValueError, match=r"\(1, 49, 768\) of the 224 x 224 input looks like transformer tokens"
    ):
        LayerHiResCam(swin, norm2).attribute(images[:1], target=1)
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = images[:1, :, :16, :16]
    torch.testing.assert_close(
        LayerGradCam(cnn, cnn[1], layout="auto").attribute(x, target=2),
        LayerGradCam(cnn, cnn[1]).attribute(x, target=2),
    )


def test_wrong_layouts_raise_errors_that_name_the_shapes(models, images):
    vit, swin = models["vit_tiny"], models["swin_tiny"]
    x = images[:1]
    norm1 = vit.blocks[-1].norm1
    with pytest.raises(
        ValueError, match=r"\(1, 197, 192\) of the 224 x 224 input looks like transformer tokens"
    ):
        LayerGradCam(vit, norm1).attribute(x, target=0)
    with pytest.raises(
        ValueError, match=r"\(1, 7, 7, 768\) of the 224 x 224 input looks like channels last"
    ):
        LayerGradCam(swin, swin.layers[-1]).attribute(x, target=0)
    with pytest.raises(ValueError, match=r"'channels_last' expects a \(N, H, W, C\).*197, 192"):
        LayerGradCam(vit, norm1, layout="channels_last").attribute(x, target=0)
    with pytest.raises(ValueError, match=r"expects tokens \(N, tokens, D\), got shape \(1, 7, 7"):
        LayerGradCam(swin, swin.layers[-1], layout=TokenLayout(0)).attribute(x, target=0)
    with pytest.raises(ValueError, match=r"2 prefix tokens \+ 196 .*197 tokens.*do not form"):
        LayerGradCam(vit, norm1, layout=TokenLayout(2, (14, 14))).attribute(x, target=0)
    with pytest.raises(ValueError, match="patch tokens on a grid of the 224 x 224 input"):
        LayerGradCam(vit, norm1, layout=TokenLayout(0)).attribute(x, target=0)
    # a timm Swin's tokens (its MLP branch) have no prefix; a stage is not tokens
    assert LayerGradCam(swin, swin.layers[-1], layout="tokens").layout == TokenLayout(0)
    with pytest.raises(ValueError, match=r"expects tokens \(N, tokens, D\), got shape \(1, 7, 7"):
        LayerGradCam(swin, swin.layers[-1], layout="tokens").attribute(x, target=0)
    # the model behind a lambda is found through its closure
    assert LayerGradCam(lambda t: vit(t), norm1, layout="tokens").layout == TokenLayout(1, (14, 14))
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    with pytest.raises(ValueError, match="Sequential has no vision transformer"):
        LayerGradCam(cnn, cnn[0], layout="tokens")
    with pytest.raises(ValueError, match="must return \\(N, C, \\*grid\\)"):
        LayerGradCam(vit, norm1, layout=lambda t: t.flatten(1)).attribute(x, target=0)
    with pytest.raises(ValueError, match="unknown layout 'nhwc'"):
        LayerGradCam(vit, norm1, layout="nhwc")
    with pytest.raises(ValueError, match="pass layout= to LayerCams"):
        LayerCams(vit, norm1, {"Grad-CAM": functools.partial(LayerGradCam, layout="tokens")})
    # stated explicitly, a channels-first reading is the user's choice
    explicit = LayerGradCam(vit, norm1, layout="channels_first").attribute(x, target=0)
    assert explicit.shape == (1, 1, 192)
    assert ChannelsLastLayout()(torch.zeros(2, 3, 4, 5)).shape == (2, 5, 3, 4)


def test_metrics_score_transformer_maps(models, images, user_method):
    from metrics import cam_explain, evaluate_methods
    from metrics.heatmaps import compute_cams

    model = models["vit_tiny"]
    result = evaluate_methods(
        model,
        "blocks.11.norm1",
        images,
        labels=torch.tensor(TARGET),
        maps_from=["pre-softmax"],
        progress=False,
        layout="tokens",
    )
    assert set(result.o["pre-softmax"]) >= set(REFERENCES)  # the user's method included
    assert all(torch.isfinite(o).all() for o in result.o["pre-softmax"].values())
    heatmaps = cam_explain(
        model,
        images.numpy(),
        np.array(TARGET),
        method="gradcam++",
        layer=model.blocks[-1].norm1,
        layout="tokens",
    )
    assert heatmaps.shape == (2, 1, 224, 224) and heatmaps.min() >= 0 and heatmaps.max() <= 1
    # the metrics wrap the model in a function; the layout is still read from the model
    with pytest.raises(ValueError, match="looks like transformer tokens"):
        compute_cams(model, "blocks.11.norm1", images, torch.tensor(TARGET))
