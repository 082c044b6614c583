"""A layer layout is used only when something confirms it (issue 22).

Hiera's unrolled tokens are read by the model's own re-roll, checked against the model's own
NCHW intermediates (timm ``forward_intermediates``, Hugging Face ``reshaped_hidden_states``);
readings no attribute states are confirmed by the locality probe or refused with the readings
listed; class-attention, hybrid and CLIPVision models read as their blocks hold them; a
partitioned (N, windows, tokens, C) tensor is refused under ``layout=None``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("timm")
pytest.importorskip("transformers")

import timm  # noqa: E402
import transformers  # noqa: E402
from timm.models.hiera import Hiera  # noqa: E402

import captum_camplus.layouts._probe as probe  # noqa: E402
import captum_camplus.testing.reference as ref  # noqa: E402
from benchmarks import layout_families as lf  # noqa: E402
from captum_camplus import LayerCams, LayerGradCam, TokenLayout  # noqa: E402
from captum_camplus.layouts import model_facts  # noqa: E402

TARGET = [3, 1]


def _reference_on_permutation(model, layer, x, oracle_of, permuted_layer=None):
    """Each method's float64 map, with the layer's tokens put on the grid by the permutation
    that maps them onto the model's own NCHW intermediate (``oracle_of(model64, x64)``):
    independent of ``captum_camplus.layouts``."""
    model64 = copy.deepcopy(model).double()
    names = {m: n for n, m in model.named_modules()}
    layer64 = model64.get_submodule(names[layer])
    raw64 = model64.get_submodule(names[permuted_layer or layer])
    kept: list[torch.Tensor] = []
    handle = raw64.register_forward_hook(
        lambda m, a, o: kept.append((o[0] if isinstance(o, tuple) else o).detach())
    )
    with torch.no_grad():
        oracle = oracle_of(model64, x.double())  # (N, C, h, w)
    handle.remove()
    tokens = kept[-1][0]  # (T, C) of image 0
    cells = oracle[0].flatten(1).T  # (h * w, C)
    perm = torch.cdist(cells, tokens).argmin(dim=1)
    torch.testing.assert_close(tokens[perm], cells)  # the oracle holds the same tokens
    A, g = ref.capture_layer(_Tensorize(model64, layer64), layer64, x.double(), TARGET)
    h, w = oracle.shape[2:]

    def grid(t: torch.Tensor) -> np.ndarray:
        return t[:, perm].reshape(len(t), h, w, -1).permute(0, 3, 1, 2).numpy()

    return {name: reference(grid(A), grid(g)) for name, (_, reference) in lf.METHODS.items()}


class _Tensorize(nn.Module):
    """The model's logits, and a layer that returns ``(tensor, None)`` seen as the tensor."""

    def __init__(self, model: nn.Module, layer: nn.Module) -> None:
        super().__init__()
        self.model = model
        layer.register_forward_hook(lambda m, a, o: o[0] if isinstance(o, tuple) else o)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out if isinstance(out, torch.Tensor) else out.logits


# ------------------------------------------------------------------------------------ Hiera


def _timm_hiera() -> nn.Module:
    torch.manual_seed(0)
    model = Hiera(img_size=64, embed_dim=8, num_heads=1, stages=(1, 2, 1, 1), num_classes=5)
    nn.init.normal_(model.head.fc.weight)  # timm scales the head to 1e-3: gradients vanish
    return model.eval()


def _hf_hiera() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.HieraConfig(
        embed_dim=8, depths=[1, 2, 1, 1], num_heads=[1, 1, 1, 1], image_size=[64, 64], num_labels=5
    )
    return transformers.HieraForImageClassification(config).eval()


_HIERA: dict[str, nn.Module] = {}


def hiera(kind: str) -> nn.Module:
    """The random-init model in float64: maps compared at 1e-6, the layout errors being O(1)."""
    if kind not in _HIERA:
        _HIERA[kind] = (_timm_hiera() if kind == "timm" else _hf_hiera()).double()
    return _HIERA[kind]


def _images(size=(64, 64), seed=1) -> torch.Tensor:
    return torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(seed))


def _timm_oracle(block: int):
    def oracle(model, x):
        return model.forward_intermediates(x, indices=[block], coarse=False)[1][0]

    return oracle


def _hf_oracle(stage: int):
    def oracle(model, x):
        return model(x, output_hidden_states=True).reshaped_hidden_states[stage + 1].movedim(-1, 1)

    return oracle


@pytest.mark.parametrize("block", range(5))
def test_timm_hiera_blocks_match_the_models_own_intermediates(block):
    """The issue's silent-wrong case: a raster reading put the hottest cell elsewhere."""
    model, x = hiera("timm"), _images().double()
    layer = model.blocks[block]
    expected = _reference_on_permutation(model, layer, x, _timm_oracle(block))
    maps = LayerCams(model, layer, layout="auto").attribute(x, target=TARGET)
    for method, reference in expected.items():
        assert lf.deviation(maps[method], reference) < 1e-6, method
    hottest = maps["Grad-CAM"][0, 0].argmax()
    assert hottest == int(np.argmax(expected["Grad-CAM"][0, 0]))
    single = LayerGradCam(model, layer, layout="auto").attribute(x, target=TARGET)
    torch.testing.assert_close(single, maps["Grad-CAM"])


@pytest.mark.parametrize("block", range(1, 5))
def test_timm_hiera_norm1_is_read_at_the_previous_blocks_grid(block):
    model, x = hiera("timm"), _images().double()
    layer = model.blocks[block].norm1
    expected = _reference_on_permutation(
        model, layer, x, _timm_oracle(block - 1), permuted_layer=model.blocks[block - 1]
    )
    cam = LayerGradCam(model, layer, layout="auto").attribute(x, target=TARGET)
    assert lf.deviation(cam, expected["Grad-CAM"]) < 1e-6


@pytest.mark.parametrize("stage", range(4))
def test_hugging_face_hiera_stages_match_reshaped_hidden_states(stage):
    model, x = hiera("hf"), _images().double()
    last = model.hiera.encoder.stages[stage].layers[-1]
    expected = _reference_on_permutation(model, last.mlp, x, _hf_oracle(stage), permuted_layer=last)
    maps = LayerCams(model, last.mlp, layout="auto").attribute(x, target=TARGET)
    for method, reference in expected.items():
        assert lf.deviation(maps[method], reference) < 1e-6, method


@pytest.mark.parametrize("kind", ["timm", "hf"])
def test_hiera_refusals_never_suggest_a_token_layout(kind):
    model, x = hiera(kind), _images().double()
    layer = model.blocks[1] if kind == "timm" else model.hiera.encoder.stages[1].layers[0].mlp
    with pytest.raises(ValueError, match="mask-unit order.*pass layout='auto'") as info:
        LayerGradCam(model, layer).attribute(x, target=TARGET)
    assert "TokenLayout(" not in str(info.value)
    with pytest.raises(ValueError, match="mask-unit order.*pass layout='auto'"):
        LayerGradCam(model, layer, layout="tokens")
    assert model_facts(model, layer).reroll is not None


@pytest.mark.parametrize("kind", ["timm", "hf"])
def test_an_explicit_row_major_token_layout_on_hiera_is_refused(kind):
    """A TokenLayout whose count fits (64 tokens = 0 prefix + 8 x 8) still reads Hiera's
    mask-unit order row by row: the model states its order, so the explicit reading is refused."""
    model, x = hiera(kind), _images().double()
    layer = model.blocks[1] if kind == "timm" else model.hiera.encoder.stages[1].layers[0].mlp
    for layout in (TokenLayout(0, (8, 8)), TokenLayout(0)):
        with pytest.raises(
            ValueError,
            match=r"TokenLayout\(prefix_tokens=0.*mask-unit order.*"
            "pass layout='auto'",
        ):
            LayerGradCam(model, layer, layout=layout).attribute(x, target=TARGET)


def test_hiera_at_another_input_size_is_refused_not_reread():
    model = hiera("timm")
    facts = model_facts(model, model.blocks[0])
    assert facts.reroll is not None and facts.reroll.image_size == (64, 64)
    tokens = torch.randn(2, 256, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="64 x 64 input with stage grids 16 x 16, 8 x 8"):
        LayerGradCam(model, model.blocks[0], layout="auto").map_from_layer(
            tokens, tokens, input_shape=(2, 3, 32, 128)
        )


# ------------------------------------------------------------- readings nothing states: probed


class PaddedTokens(nn.Module):
    """6 x 9 patch tokens of a 96 x 128 (3:4) input: a 16-pixel patch embedding padded on the
    right, as overlapping or padded embeds give. The shapes read only as 6 prefix + 6 x 8."""

    def __init__(self, order: torch.Tensor | None = None) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 6, 16, stride=16, padding=(0, 8))
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 5)
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        if self.order is not None:
            tokens = tokens[:, self.order]
        return self.head(self.norm(tokens).mean(dim=1))


def _unrolled(h: int, w: int) -> torch.Tensor:
    """Row-major indices in 2 x 2 mask-unit order (Hiera's unroll, once)."""
    grid = torch.arange(h * w).reshape(h // 2, 2, w // 2, 2)
    return grid.permute(1, 3, 0, 2).flatten()


def test_a_token_count_that_factors_the_wrong_way_is_refused_not_misread():
    """Before: 54 tokens read as 6 prefix + 6 x 8, six real patches dropped, no word."""
    torch.manual_seed(0)
    model, x = PaddedTokens().eval(), _images((96, 128))
    with pytest.raises(
        ValueError, match=r"tokens \(6 prefix \+ 6 x 8 grid.*locality probe contradicts it"
    ):
        LayerGradCam(model, model.norm, layout="auto").attribute(x, target=TARGET)
    with pytest.raises(ValueError, match="it reads as .*, but the locality probe contradicts"):
        LayerGradCam(model, model.norm).attribute(x, target=TARGET)
    named = LayerGradCam(model, model.norm, layout=TokenLayout(0, (6, 9)))
    assert named.attribute(x, target=TARGET).shape == (2, 1, 6, 9)


@pytest.mark.parametrize("order", ["unrolled", "shuffled", "reversed"])
def test_reordered_tokens_are_refused_where_the_count_reads_as_a_raster(order):
    torch.manual_seed(0)
    perm = {
        "unrolled": _unrolled(4, 8),
        "shuffled": torch.randperm(32, generator=torch.Generator().manual_seed(3)),
        "reversed": torch.arange(31, -1, -1),
    }[order]
    model = PaddedTokens(order=perm).eval()
    model.embed = nn.Conv2d(3, 6, 16, stride=16)  # 64 x 128 -> 4 x 8, a raster count
    with pytest.raises(ValueError, match="the locality probe contradicts it"):
        LayerGradCam(model, model.norm, layout="auto").attribute(_images((64, 128)), TARGET)


@pytest.mark.parametrize("size", [(32, 48), (48, 32), (64, 64)])
def test_row_major_tokens_of_an_unknown_model_are_confirmed_by_the_probe(size):
    torch.manual_seed(0)
    model, x = lf.Tokens(prefix=0, patch=8).eval(), _images(size)
    auto = LayerGradCam(model, model.norm, layout="auto").attribute(x, target=TARGET)
    grid = (size[0] // 8, size[1] // 8)
    named = LayerGradCam(model, model.norm, layout=TokenLayout(0, grid))
    torch.testing.assert_close(auto, named.attribute(x, target=TARGET))


def test_the_probe_runs_once_per_layer_and_input_size(monkeypatch):
    torch.manual_seed(0)
    model, x = lf.Tokens(prefix=0, patch=8).eval(), _images((32, 40))
    runs = []
    real = probe._probe
    monkeypatch.setattr(probe, "_probe", lambda *a: runs.append(1) or real(*a))
    for _ in range(3):
        LayerGradCam(model, model.norm, layout="auto").attribute(x, target=TARGET)
        LayerCams(model, model.norm, layout="auto").attribute(x, target=TARGET)
    assert len(runs) == 1
    LayerGradCam(model, model.norm, layout="auto").attribute(_images((40, 32)), target=TARGET)
    assert len(runs) == 2


def test_a_model_the_probe_cannot_run_is_refused_with_its_error():
    torch.manual_seed(0)
    model, x = lf.Tokens(prefix=0, patch=8).eval(), _images((32, 40))
    scale = torch.tensor(1.0)

    def needs_scale(images, factor):
        return model(images * factor)

    with pytest.raises(ValueError, match="could not run the model on .*probe images.*TypeError"):
        LayerGradCam(needs_scale, model.norm, layout="auto").attribute(
            x, target=TARGET, additional_forward_args=(scale,)
        )


def test_the_probe_does_not_run_a_model_in_training_mode():
    torch.manual_seed(0)
    model, x = lf.Tokens(prefix=0, patch=8).train(), _images((32, 24))
    with pytest.raises(ValueError, match=r"training mode \(call model.eval\(\)"):
        LayerGradCam(model, model.norm, layout="auto").attribute(x, target=TARGET)
    cam = LayerGradCam(model.eval(), model.norm, layout="auto").attribute(x, target=TARGET)
    assert cam.shape == (2, 1, 4, 3)


def test_twins_at_a_non_square_input_is_read_on_its_grid():
    torch.manual_seed(0)
    model = timm.create_model(
        "twins_svt_small",
        pretrained=False,
        num_classes=5,
        embed_dims=(8, 16, 32, 64),
        depths=(1, 1, 1, 1),
        num_heads=(1, 1, 1, 1),
        wss=[2, 2, 2, 2],
    ).eval()
    x = _images((64, 96))
    layer = model.blocks[3][0].norm1  # (N, 2 * 3, 64) tokens, nothing states the layout
    auto = LayerGradCam(model, layer, layout="auto").attribute(x, target=TARGET)
    named = LayerGradCam(model, layer, layout=TokenLayout(0, (2, 3))).attribute(x, TARGET)
    torch.testing.assert_close(auto, named)


# --------------------------------------------------- class attention, hybrids, CLIPVision


def _timm(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=5, **kwargs).eval()


def _cait() -> nn.Module:
    return _timm("cait_xxs24_224", img_size=64, depth=2, embed_dim=16, num_heads=2)


def _xcit() -> nn.Module:
    return _timm("xcit_nano_12_p16_224", depth=2, embed_dim=16, num_heads=2)


CASES = {
    "CaiT blocks[0].norm1": (
        _cait,
        "blocks.0.norm1",
        (64, 64),
        TokenLayout(0, (4, 4)),
    ),
    "CaiT blocks[1]": (
        _cait,
        "blocks.1",
        (64, 64),
        TokenLayout(0, (4, 4)),
    ),
    "CaiT class-attention norm1": (
        _cait,
        "blocks_token_only.0.norm1",
        (64, 64),
        TokenLayout(1, (4, 4)),
    ),
    "XCiT blocks[1].norm1": (
        _xcit,
        "blocks.1.norm1",
        (64, 48),
        TokenLayout(0, (4, 3)),
    ),
    "XCiT class-attention norm1": (
        _xcit,
        "cls_attn_blocks.0.norm1",
        (64, 64),
        TokenLayout(1, (4, 4)),
    ),
    "hybrid ViT (ResNet features)": (
        lambda: _timm("vit_tiny_r_s16_p8_224", img_size=64),
        "blocks.11.norm1",
        (64, 64),
        TokenLayout(1, (2, 2)),
    ),
    "hybrid ViT, dynamic size 64 x 96": (
        lambda: _timm("vit_tiny_r_s16_p8_224", img_size=64, dynamic_img_size=True),
        "blocks.11.norm1",
        (64, 96),
        TokenLayout(1, (2, 3)),
    ),
    "Hugging Face CLIPVision": (
        lf.ClipVisionClassifier,
        "clip.encoder.layers.1.layer_norm1",
        (32, 32),
        TokenLayout(1, (4, 4)),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_former_false_refusals_give_the_map_of_the_right_layout(name):
    build, layer_name, size, layout = CASES[name]
    model = build()
    layer, x, forward = model.get_submodule(layer_name), _images(size), model.eval()
    expected = LayerGradCam(forward, layer, layout=layout).attribute(x, target=TARGET)
    auto = LayerGradCam(forward, layer, layout="auto").attribute(x, target=TARGET)
    torch.testing.assert_close(auto, expected)
    with pytest.raises(ValueError, match="looks like transformer tokens") as info:
        LayerGradCam(forward, layer).attribute(x, target=TARGET)
    assert f"{layout.prefix_tokens} prefix" in str(info.value)


@pytest.mark.parametrize("build", [_cait, _xcit])
def test_class_attention_models_count_the_class_token_where_it_is(build):
    model = build()
    prefix = {
        name: model_facts(model, model.get_submodule(name)).prefix_tokens
        for name in ("patch_embed", "blocks.0.norm1", "blocks.1", "norm")
    }
    assert prefix == {"patch_embed": 0, "blocks.0.norm1": 0, "blocks.1": 0, "norm": 1}


# ------------------------------------------------------------------ partitioned, (tensor, None)


class Windows(nn.Module):
    """A conv grid cut into 2 x 2 windows of 4 x 4 positions: (N, 4, 16, C), as window attention
    holds it; the layer (an opaque identity) sees the partition."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 4, stride=4)
        self.part = lf.Opaque(nn.Identity())
        self.head = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)  # (N, 6, 8, 8)
        n, c, h, w = a.shape
        win = a.reshape(n, c, 2, h // 2, 2, w // 2).permute(0, 2, 4, 3, 5, 1)
        return self.head(self.part(win.reshape(n, 4, 16, c)).mean(dim=(1, 2)))


def test_a_partitioned_window_tensor_is_refused_under_none():
    torch.manual_seed(0)
    model = Windows().eval()
    with pytest.raises(ValueError, match=r"\(2, 4, 16, 6\) .* partitioned \(N, windows"):
        LayerGradCam(model, model.part).attribute(_images((32, 32)), target=TARGET)
    # a channels-first grid of an odd aspect stays Captum's
    odd = nn.Sequential(lf.Opaque(nn.Conv2d(3, 5, (14, 10))), nn.Flatten(), nn.Linear(105, 5))
    cam = LayerGradCam(odd.eval(), odd[0]).attribute(_images((16, 16)), target=TARGET)
    assert cam.shape == (2, 1, 3, 7)


class TupleLayer(nn.Module):
    """Returns ``(tensor, None)`` as Hugging Face's Hiera and attention layers do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.conv(x), None


class TupleModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = TupleLayer()
        self.head = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, _ = self.block(x)
        return self.head(a.mean(dim=(2, 3)))


@pytest.mark.parametrize("layout", [None, "auto"])
def test_a_layer_returning_tensor_and_none_gets_one_error_from_every_class(layout):
    torch.manual_seed(0)
    model, x = TupleModel().eval(), _images((8, 8))
    texts = []
    for method in (LayerCams, LayerGradCam):
        with pytest.raises(ValueError, match=r"returns \(Tensor, NoneType\), not a tensor") as e:
            method(model, model.block, layout=layout).attribute(x, target=TARGET)
        texts.append(str(e.value))
    assert texts[0] == texts[1]
    assert "its mlp, output or layer norm" in texts[0]


# ------------------------------------------------------------------------ text and sequences


class TextClassifier(nn.Module):
    """Token ids (N, T) -> embedding (N, T, D) -> a GRU encoder -> mean -> 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.encoder = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.encoder(self.embed(ids))).mean(dim=1))


@pytest.mark.parametrize("length", [5, 12])
def test_a_text_models_token_layer_gives_one_value_per_token_under_auto(length):
    torch.manual_seed(0)
    model = TextClassifier().eval()
    ids = torch.randint(0, 50, (2, length), generator=torch.Generator().manual_seed(2))
    cam = LayerGradCam(model, model.encoder, layout="auto").attribute(ids, target=[0, 2])
    assert cam.shape == (2, 1, length)
    model64 = copy.deepcopy(model).double()
    A, g = ref.capture_layer(model64, model64.encoder, ids, [0, 2])
    A64, g64 = A.numpy(), g.numpy()  # (N, T, D): Grad-CAM over the tokens, by hand
    expected = (g64.mean(axis=1, keepdims=True) * A64).sum(axis=2)[:, None]
    assert lf.deviation(cam, expected) < 1e-5
    maps = LayerCams(model, model.encoder, layout="auto").attribute(ids, target=[0, 2])
    torch.testing.assert_close(maps["Grad-CAM"], cam)
    # None keeps Captum's reading: the map runs over the D hidden units
    captum_like = LayerGradCam(model, model.encoder).attribute(ids, target=[0, 2])
    assert captum_like.shape == (2, 1, 8)


def test_a_sequence_layer_of_another_length_is_refused_under_auto():
    torch.manual_seed(0)
    model = TextClassifier().eval()
    ids = torch.randint(0, 50, (2, 6))

    def strided(t: torch.Tensor) -> torch.Tensor:  # every other token: 3 rows for 6 tokens
        return model.head(model.encoder(model.embed(t)[:, ::2]).mean(dim=1))

    with pytest.raises(ValueError, match="has 3 positions, not the input's 6"):
        LayerGradCam(strided, model.encoder, layout="auto").attribute(ids, target=[0, 1])
