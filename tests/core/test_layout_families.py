"""Layouts established from the layer tensor and its input, on every model family a Captum user
brings: timm, torchvision, Hugging Face and open_clip transformers (small, random init).

With ``layout="auto"`` every method matches the float64 reference computed on a hand reshape
(``benchmarks/layout_families.py``); with ``layout=None`` an error names the layout to pass, for
the model and for the model wrapped (lambda, ``nn.Sequential``, ``DataParallel``). Shapes that
admit several readings or none get the error that lists them; a layer whose first dimension is
not the batch is refused with the reason.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

pytest.importorskip("timm")
pytest.importorskip("transformers")
pytest.importorskip("open_clip")
pytest.importorskip("torchvision")

from benchmarks import layout_families as lf  # noqa: E402
from captum_camplus import (  # noqa: E402
    LayerCams,
    LayerGradCam,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    TokenLayout,
)
from captum_camplus.layouts import model_facts  # noqa: E402

_BUILT: dict[str, tuple] = {}


def built(name: str):
    """(model, layer, images, float64 reference maps), computed once per family."""
    if name not in _BUILT:
        model = lf.build(name)
        x = lf.images(name)
        layer = model.get_submodule(lf.FAMILIES[name].layer)
        _BUILT[name] = (model, layer, x, lf.reference_maps(name, model, x))
    return _BUILT[name]


@pytest.mark.parametrize("name", list(lf.FAMILIES))
def test_auto_maps_of_every_method_match_the_float64_reference(name):
    model, layer, x, expected = built(name)
    grid = lf.FAMILIES[name].grid
    maps = LayerCams(model, layer, layout="auto").attribute(x, target=lf.TARGET)
    for method in lf.METHODS:
        assert maps[method].shape == (2, 1, *grid), method
        assert lf.deviation(maps[method], expected[method]) < 1e-4, method
    single = LayerGradCamPlusPlus(model, layer, layout="auto").attribute(x, target=lf.TARGET)
    torch.testing.assert_close(single, maps["Grad-CAM++"])


@pytest.mark.parametrize("name", list(lf.FAMILIES))
def test_layout_none_raises_an_error_naming_the_layout(name):
    model, layer, x, _ = built(name)
    family = lf.FAMILIES[name]
    with pytest.raises(
        ValueError, match=f"of the {family.size[0]} x {family.size[1]} input"
    ) as info:
        LayerGradCam(model, layer).attribute(x, target=lf.TARGET)
    assert f"pass layout='{family.none_names}'" in str(info.value)


WRAPPERS = {
    "lambda": lambda model: lambda x: model(x),
    "partial": lambda model: functools.partial(model.forward),
    "Sequential": lambda model: nn.Sequential(nn.Identity(), model),
    "DataParallel": nn.DataParallel,
}


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
@pytest.mark.parametrize(
    "name",
    ["timm ViT", "torchvision swin_t (small)", "Hugging Face DeiT", "open_clip ViT visual tower"],
)
def test_wrapped_models_are_read_as_the_model(name, wrapper):
    model, layer, x, expected = built(name)
    wrapped = WRAPPERS[wrapper](model)
    cam = LayerHiResCam(wrapped, layer, layout="auto").attribute(x, target=lf.TARGET)
    assert lf.deviation(cam, expected["HiResCAM"]) < 1e-4
    with pytest.raises(ValueError, match="pass layout="):
        LayerHiResCam(wrapped, layer).attribute(x, target=lf.TARGET)


def test_a_hugging_face_model_needs_no_lambda_and_a_logits_lambda_works_too():
    model, layer, x, expected = built("Hugging Face ViT")
    direct = LayerGradCam(model, layer, layout="auto").attribute(x, target=lf.TARGET)  # ModelOutput
    called = LayerGradCam(lambda t: model(pixel_values=t).logits, layer, layout="auto")
    torch.testing.assert_close(called.attribute(x, target=lf.TARGET), direct)
    assert lf.deviation(direct, expected["Grad-CAM"]) < 1e-4
    assert model_facts(model, layer).prefix_tokens == 1


def test_model_facts_per_family():
    facts = {name: model_facts(built(name)[0], built(name)[1]) for name in lf.FAMILIES}
    assert facts["timm DeiT (distilled)"].prefix_tokens == 2
    assert facts["timm ViT, 4 registers"].prefix_tokens == 5
    assert facts["timm ViT dynamic size, 64 x 16"].grid is None
    assert facts["timm ViT"].grid == (4, 4)
    assert facts["timm Swin, 32 x 128"].channels_last is True
    assert facts["Hugging Face DeiT"].prefix_tokens == 2
    assert facts["Hugging Face Swin, 32 x 64"].prefix_tokens == 0
    assert facts["torchvision vit_b_16 (small)"].patch_size == (8, 8)
    assert facts["torchvision convnext_tiny (small)"].channels_last is True
    assert facts["open_clip ViT visual tower"].prefix_tokens == 1
    # before torchvision Swin's first Permute the tensor is channels first
    swin = built("torchvision swin_t (small)")[0]
    assert model_facts(swin, swin.features[0][0]).channels_last is False
    assert model_facts(swin, swin.norm).channels_last is True
    assert model_facts(swin, swin.avgpool).channels_last is False


def test_shapes_alone_are_ambiguous_for_tiny_torchvision_swin_and_the_model_decides():
    """(2, 4, 8, 16) of a 32 x 64 image reads both ways; the Permute modules say channels last."""
    model, layer, x, expected = built("torchvision swin_t (small)")
    plain = lf.Opaque(nn.Sequential(nn.Conv2d(3, 4, 8), nn.AdaptiveAvgPool2d((8, 16))))
    shape_only = nn.Sequential(plain, nn.Flatten(), nn.Linear(4 * 8 * 16, 5)).eval()
    with pytest.raises(ValueError, match="but the locality probe contradicts each") as info:
        LayerGradCam(shape_only, plain, layout="auto").attribute(x, target=lf.TARGET)
    assert "layout='channels_first'" in str(info.value)
    assert "layout='channels_last'" in str(info.value)
    # Captum's reading stays the default where it is one of the readings
    assert LayerGradCam(shape_only, plain).attribute(x, target=lf.TARGET).shape == (2, 1, 8, 16)
    # the swin's tensor has the same shape; its Permute modules decide
    cam = LayerGradCam(model, layer, layout="auto").attribute(x, target=lf.TARGET)
    assert lf.deviation(cam, expected["Grad-CAM"]) < 1e-4
    patches = LayerGradCam(model, model.features[0][0], layout="auto").attribute(x, lf.TARGET)
    assert patches.shape == (2, 1, 8, 16)


def test_two_token_readings_the_locality_probe_picks_the_true_one():
    """1 + 2 x 2 tokens = 5 = 4 + 1 x 1: the shapes fit both, the model's locality one."""
    torch.manual_seed(0)
    model = lf.Tokens(prefix=1, patch=16).eval()
    x = torch.randn(2, 3, 32, 32)
    named = LayerGradCam(model, model.norm, layout=TokenLayout(1, (2, 2)))
    expected = named.attribute(x, target=[0, 1])
    auto = LayerGradCam(model, model.norm, layout="auto").attribute(x, target=[0, 1])
    torch.testing.assert_close(auto, expected)
    with pytest.raises(ValueError, match="looks like transformer tokens") as info:
        LayerGradCam(model, model.norm).attribute(x, target=[0, 1])
    assert "layout=TokenLayout(prefix_tokens=1, grid=(2, 2))" in str(info.value)
    assert "prefix_tokens=4" not in str(info.value)


def test_shapes_without_a_reading_are_refused_by_auto_and_listed():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    model = lf.Tokens(prefix=26, patch=8).eval()  # 26 + 2 x 2 = 30 tokens: no P <= 8 fits
    with pytest.raises(ValueError, match=r"\(2, 30, 6\) of the 16 x 16 input has no reading"):
        LayerGradCam(model, model.norm, layout="auto").attribute(x, target=[0, 1])
    with pytest.raises(ValueError, match="no token grid fits it either"):
        LayerGradCam(model, model.norm).attribute(x, target=[0, 1])
    odd = nn.Sequential(
        lf.Opaque(nn.Conv2d(3, 5, (14, 10))), nn.Flatten(), nn.Linear(5 * 3 * 7, 4)
    ).eval()
    with pytest.raises(ValueError, match=r"\(2, 5, 3, 7\) of the 16 x 16 input has no reading"):
        LayerGradCam(odd, odd[0], layout="auto").attribute(x, target=[0, 1])
    # without a reading a 4-D tensor stays Captum's channels first under None
    assert LayerGradCam(odd, odd[0]).attribute(x, target=[0, 1]).shape == (2, 1, 3, 7)


def test_windowed_attention_and_sequence_first_tensors_are_refused_with_the_reason():
    model, _, x, _ = built("timm Swin, 32 x 128")
    qkv = model.layers[-1].blocks[-1].attn.qkv
    for layout in (None, "auto", "channels_last", "channels_first"):
        with pytest.raises(ValueError, match="rows per image, as windowed attention"):
            LayerGradCam(model, qkv, layout=layout).attribute(x, target=lf.TARGET)

    seq = lf.SequenceFirst().eval()
    with pytest.raises(ValueError, match=r"\(16, 2, 6\) does not have the batch.*sequence-first"):
        LayerGradCam(seq, seq.norm, layout="auto").attribute(x[:, :, :32, :32], target=[0, 1])


def test_one_dimensional_models_keep_working_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14, 3)).eval()
    x = torch.randn(2, 2, 16)
    plain = LayerGradCam(model, model[1]).attribute(x, target=[0, 2])
    assert plain.shape == (2, 1, 14)
    for layout in ("auto", "channels_first"):
        torch.testing.assert_close(
            LayerGradCam(model, model[1], layout=layout).attribute(x, target=[0, 2]), plain
        )


def test_a_layer_with_zero_gradient_everywhere_warns_and_suggests_an_earlier_layer():
    model, _, x, _ = built("timm ViT")
    with pytest.warns(UserWarning, match="exactly zero on the whole grid.*earlier layer"):
        cams = LayerCams(model, model.blocks[-1], layout="auto").attribute(x, target=lf.TARGET)
    assert all(not cam.any() for cam in cams.values())


def test_token_layout_without_grid_takes_the_inputs_aspect():
    model, layer, x, expected = built("timm ViT dynamic size, 64 x 16")
    cam = LayerGradCam(model, layer, layout=TokenLayout(1)).attribute(x, target=lf.TARGET)
    assert cam.shape == (2, 1, 8, 2)
    assert lf.deviation(cam, expected["Grad-CAM"]) < 1e-4
    assert LayerGradCam(model, layer, layout="tokens").layout == TokenLayout(1, None)


def test_a_convolution_or_what_follows_it_in_a_sequential_is_channels_first():
    """(N, 8, 8, 8) of a 16 x 16 image reads both ways; the Conv2d before the ReLU decides."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(512, 3)
    ).eval()
    x = torch.randn(2, 3, 16, 16)
    auto = LayerGradCam(model, model[1], layout="auto").attribute(x, target=[0, 2])
    torch.testing.assert_close(auto, LayerGradCam(model, model[1]).attribute(x, target=[0, 2]))
    assert model_facts(model, model[1]).channels_last is False
    assert model_facts(model, model[2]).channels_last is None


# ------------------------------------------------------------- a named layout the shapes contradict


@pytest.mark.parametrize(
    "name", [n for n, family in lf.FAMILIES.items() if family.none_names == "channels_last"]
)
def test_named_channels_last_of_a_channels_last_family_is_the_auto_map(name):
    model, layer, x, expected = built(name)
    cam = LayerGradCam(model, layer, layout="channels_last").attribute(x, target=lf.TARGET)
    assert lf.deviation(cam, expected["Grad-CAM"]) < 1e-4


def test_channels_last_on_a_channels_first_conv_is_refused_naming_the_reading_that_fits():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, stride=8, padding=1)  # 32 x 64 -> (N, 8, 4, 8)
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 8, 3)).eval()
    x = torch.randn(2, 3, 32, 64)
    for method in (LayerGradCam, LayerCams):
        with pytest.raises(ValueError, match=r"\(2, 8, 4, 8\) of the 32 x 64 input does not") as e:
            method(model, model[1], layout="channels_last").attribute(x, target=[0, 1])
        assert "read as layout='channels_last'" in str(e.value)
        assert "channels first (N, C=8, 4 x 8 grid): layout='channels_first'" in str(e.value)
    expected = LayerGradCam(model, model[1]).attribute(x, target=[0, 1])
    assert expected.shape == (2, 1, 4, 8)
    for layout in ("channels_first", "auto"):
        named = LayerGradCam(model, model[1], layout=layout).attribute(x, target=[0, 1])
        torch.testing.assert_close(named, expected)


def test_a_token_grid_that_contradicts_the_input_is_refused_naming_the_grid_that_fits():
    """A dynamic-size ViT at 64 x 16, 8 x 8 patches: 1 + 8 x 2 tokens (1 + 4 x 4 counts too)."""
    model, layer, x, expected = built("timm ViT dynamic size, 64 x 16")
    with pytest.raises(ValueError, match=r"\(2, 17, \d+\) of the 64 x 16 input does not") as info:
        LayerGradCam(model, layer, layout=TokenLayout(1, (4, 4))).attribute(x, target=lf.TARGET)
    assert "read as layout=TokenLayout(prefix_tokens=1, grid=(4, 4))" in str(info.value)
    assert "layout=TokenLayout(prefix_tokens=1, grid=(8, 2))" in str(info.value)
    named = LayerGradCam(model, layer, layout=TokenLayout(1, (8, 2))).attribute(x, lf.TARGET)
    assert lf.deviation(named, expected["Grad-CAM"]) < 1e-4


def test_a_named_layout_stands_where_the_shapes_have_no_reading():
    """A convolution without padding at an odd aspect has no reading: the caller's choice holds."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    model = nn.Sequential(nn.Conv2d(3, 5, (14, 10)), nn.Flatten(), nn.Linear(5 * 3 * 7, 3)).eval()
    maps = LayerGradCam(model, model[0], layout="channels_last").attribute(x, target=[0, 1])
    assert maps.shape == (2, 1, 5, 3)  # (N, 5, 3, 7) read as a 5 x 3 grid of 7 channels
