"""``camplus explain|compare`` on a vision transformer: its default layer, the layout from the
model."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

timm = pytest.importorskip("timm")
pytest.importorskip("torchvision")
pytest.importorskip("skimage")
pytest.importorskip("matplotlib")
from hugging_face_folders import vit_folder  # noqa: E402

from camplus_app import cli, zoo  # noqa: E402
from camplus_app.images import sample_images  # noqa: E402

ARCH = "vit_tiny_patch16_224"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def vit_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vit") / "vit_tiny.pt"
    torch.save(timm.create_model(ARCH, pretrained=False, num_classes=5).state_dict(), path)
    return path


def test_default_layer_of_a_vision_transformer_is_the_last_blocks_first_norm() -> None:
    vit = timm.create_model(ARCH, pretrained=False, depth=3)
    assert zoo.default_layer_name(vit) == "blocks.2.norm1"
    deit = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, depth=2)
    assert zoo.default_layer_name(deit) == "blocks.1.norm1"
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, depths=(1, 1, 1, 2))
    assert zoo.default_layer_name(swin) == "layers.3.blocks.1.norm1"


def test_explain_a_vit_from_a_weights_file(tmp_path, figure_calls, vit_weights) -> None:
    drawn = figure_calls("overlay_figure")
    out = tmp_path / "out"
    argv = ["explain", "coffee", "--model", f"timm/{ARCH}", "--weights", str(vit_weights)]
    assert (
        cli.main([*argv, "--target", "2", "--methods", "gradcam,hirescam", "-q", "-o", str(out)])
        == 0
    )
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert visible == ["coffee.png", "manifest.backup.json", "manifest.json", "predictions.csv"]
    image, heatmaps, _ = drawn["coffee"]

    # Independent reference: hook, autograd.grad, the grid restored by hand, upsample, min-max.
    clf = zoo.load_classifier(ARCH, vit_weights)
    assert clf.layer_name == "blocks.11.norm1"
    x = clf.preprocess([sample_images(["coffee"])["coffee"]])
    torch.testing.assert_close(image, x[0])
    kept = []
    handle = clf.layer.register_forward_hook(lambda module, args, output: kept.append(output))
    score = clf.model(x)[0, 2]
    handle.remove()
    (g,) = torch.autograd.grad(score, kept[0])
    a, g = kept[0].detach().double(), g.double()
    grid = lambda t: t[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)  # noqa: E731
    a, g = grid(a), grid(g)
    maps = {
        "Grad-CAM": (g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True).relu(),
        "HiResCAM": (g * a).sum(dim=1, keepdim=True).relu(),
    }
    for name, cam in maps.items():
        up = F.interpolate(cam, size=(224, 224), mode="bilinear", align_corners=False)
        expected = (up - up.min()) / (up.max() - up.min())
        torch.testing.assert_close(heatmaps[name].double(), expected[0], atol=1e-4, rtol=0)


def test_compare_a_vit_from_a_weights_file(tmp_path, vit_weights) -> None:
    pytest.importorskip("quantus")
    out = tmp_path / "out"
    argv = ["compare", "coffee", "chelsea", "--model", ARCH, "--weights", str(vit_weights)]
    assert cli.main([*argv, "--methods", "gradcam,gradcam++", "-q", "-o", str(out)]) == 0
    rows = _rows(out / "scores.csv")
    assert {row["method"] for row in rows} == {"Grad-CAM", "Grad-CAM++"}
    assert (out / "relative_performance.csv").is_file() and (out / "alphas.png").is_file()


def test_a_named_token_layer_is_read_as_tokens(tmp_path, vit_weights) -> None:
    out = tmp_path / "out"
    argv = ["explain", "coffee", "--model", ARCH, "--weights", str(vit_weights)]
    assert cli.main([*argv, "--layer", "blocks.10", "-q", "-o", str(out)]) == 0


def test_default_layer_per_transformer_family() -> None:
    from benchmarks import layout_families as lf

    expected = {
        "torchvision vit_b_16 (small)": "encoder.layers.encoder_layer_1.ln_1",
        "torchvision swin_t (small)": "features.3.0.norm1",
        "Hugging Face ViT": "vit.layers.1.layernorm_before",
        "Hugging Face DeiT": "deit.layers.1.layernorm_before",
        "Hugging Face Swin, 32 x 64": "swin.encoder.layers.1.blocks.0.layernorm_before",
        "timm ViT, 4 registers": "blocks.1.norm1",
    }
    for name, layer in expected.items():
        assert zoo.default_layer_name(lf.build(name), image_size=32) == layer, name
    # ConvNeXt is a CNN: its last spatial layer, channels first
    convnext = lf.build("torchvision convnext_tiny (small)")
    assert zoo.default_layer_name(convnext, image_size=32) == "features"


@pytest.fixture(scope="module")
def hugging_face_folder(tmp_path_factory) -> Path:
    return vit_folder(tmp_path_factory.mktemp("hf") / "vit", ["cat", "dog", "cup"])


def test_explain_a_local_hugging_face_folder(tmp_path, hugging_face_folder, capsys) -> None:
    clf = zoo.load_classifier(str(hugging_face_folder))
    assert clf.layer_name == "vit.layers.1.layernorm_before"
    assert clf.categories == ["cat", "dog", "cup"]
    x = clf.preprocess([sample_images(["coffee"])["coffee"]])
    assert x.shape == (1, 3, 32, 32) and isinstance(clf.model(x), torch.Tensor)
    out = tmp_path / "out"
    argv = ["explain", "coffee", "--model", str(hugging_face_folder), "--target", "cup"]
    assert cli.main([*argv, "--methods", "gradcam,hirescam", "-o", str(out)]) == 0
    assert "CAM layer vit.layers.1.layernorm_before" in capsys.readouterr().out
    assert _rows(out / "predictions.csv")[0]["class_name"] == "cup"
    with pytest.raises(ValueError, match="holds its weights: drop --weights"):
        zoo.load_classifier(str(hugging_face_folder), weights=hugging_face_folder / "x.pt")
    with pytest.raises(ValueError, match="no config.json"):
        zoo.load_classifier(str(tmp_path))


def test_compare_a_local_hugging_face_folder(tmp_path, hugging_face_folder) -> None:
    pytest.importorskip("quantus")
    out = tmp_path / "out"
    argv = ["compare", "coffee", "chelsea", "--model", str(hugging_face_folder)]
    assert cli.main([*argv, "--methods", "gradcam,gradcam++", "-q", "-o", str(out)]) == 0
    assert {row["method"] for row in _rows(out / "scores.csv")} == {"Grad-CAM", "Grad-CAM++"}
    assert "vit.layers.1.layernorm_before" in (out / "report.md").read_text()
