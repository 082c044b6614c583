"""``--layout`` of ``camplus explain`` and ``camplus compare``: its spellings, the core's
``layout=`` each gives, the maps it reads, the refusals that name it, and ``--resume``.

Tiny random-init timm models: a ViT-Tiny (197 tokens: a class token and a 14 x 14 grid) and
timm's ``test_efficientnet`` on crops of the bundled photographs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

timm = pytest.importorskip("timm")
pytest.importorskip("skimage")
pytest.importorskip("matplotlib")
from benchmarks import layout_families as lf  # noqa: E402
from benchmarks.make_dataset import write_dataset  # noqa: E402
from camplus_app import cli, errors, figures  # noqa: E402
from camplus_app.commands.compare.settings import settings_from  # noqa: E402
from camplus_app.errors import UsageError  # noqa: E402
from camplus_app.options import (  # noqa: E402
    layout_option,
    parse_layout,
    parse_methods,
    with_layout_options,
)
from camplus_app.runs import MANIFEST, RunFolderError, read_manifest  # noqa: E402
from captum_camplus import LayerGradCam  # noqa: E402
from captum_camplus.layouts import TokenLayout  # noqa: E402

VIT = "vit_tiny_patch16_224"
CNN = "test_efficientnet"


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("auto", "auto"),
        ("none", None),
        ("None", None),
        ("channels_first", "channels_first"),
        ("channels_last", "channels_last"),
        ("tokens", "tokens"),
        ("tokens:1", TokenLayout(1)),
        ("tokens:0:6x9", TokenLayout(0, (6, 9))),
        (" tokens:5:14x14 ", TokenLayout(5, (14, 14))),
    ],
)
def test_each_spelling_is_a_core_layout_and_back(text, spec) -> None:
    assert parse_layout(text) == spec
    assert parse_layout(layout_option(spec)) == spec


@pytest.mark.parametrize(
    "text", ["", "nchw", "tokens:", "tokens:-1", "tokens:1:14", "tokens:1:0x14", "tokens:1:14x14x2"]
)
def test_a_bad_spelling_names_the_spellings(text) -> None:
    with pytest.raises(UsageError, match="is not a layout|must be positive") as caught:
        parse_layout(text)
    assert "tokens:1:14x14" in str(caught.value)


def test_core_selectors_get_their_option() -> None:
    message = (
        "reads as tokens (1 prefix + 14 x 14 grid, D=192): "
        "layout=TokenLayout(prefix_tokens=1, grid=(14, 14)); channels last: "
        "layout='channels_last'; or layout=None; pass TokenLayout(prefix_tokens=..., grid=...)"
    )
    assert with_layout_options(message) == (
        "reads as tokens (1 prefix + 14 x 14 grid, D=192): "
        "layout=TokenLayout(prefix_tokens=1, grid=(14, 14)) (--layout tokens:1:14x14); "
        "channels last: layout='channels_last' (--layout channels_last); or layout=None "
        "(--layout none); pass TokenLayout(prefix_tokens=..., grid=...) (--layout tokens:P:HxW)"
    )
    # every option the message names parses to the layout beside it
    assert parse_layout("tokens:1:14x14") == TokenLayout(prefix_tokens=1, grid=(14, 14))


@pytest.fixture(scope="module")
def vit_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vit") / "vit.pt"
    torch.save(timm.create_model(VIT, num_classes=5).state_dict(), path)
    return path


def _explain(tmp_path, monkeypatch, weights: Path, *extra: str) -> tuple[Path, dict]:
    drawn = {}
    real = figures.overlay_figure

    def spy(image, heatmaps, title):
        drawn[title.split(":")[0]] = heatmaps
        return real(image, heatmaps, title)

    monkeypatch.setattr(figures, "overlay_figure", spy)
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
    argv = ["explain", "coffee", "--model", f"timm/{VIT}", "--weights", str(weights), "-q"]
    assert cli.main([*argv, "--methods", "gradcam,eigencam", "-o", str(out), *extra]) == 0
    return out, drawn["coffee"]


def test_explain_with_a_named_token_layout_draws_the_auto_maps(
    tmp_path, monkeypatch, vit_weights
) -> None:
    auto_out, auto = _explain(tmp_path, monkeypatch, vit_weights)
    named_out, named = _explain(tmp_path, monkeypatch, vit_weights, "--layout", "tokens:1:14x14")
    assert read_manifest(auto_out)["settings"]["layout"] == "auto"
    assert read_manifest(named_out)["settings"]["layout"] == "tokens:1:14x14"
    # the auto maps are checked against a hand-made reading in test_cli_transformers.py
    for method in ("Grad-CAM", "EigenCAM"):
        torch.testing.assert_close(named[method], auto[method])


def _fails(argv: list[str], capsys, *messages: str) -> str:
    assert cli.main(argv) == errors.USAGE_ERROR
    err = capsys.readouterr().err
    assert err.startswith("camplus: error: ") and err.count("\n") == 1, err
    for message in messages:
        assert message in err, err
    return err


@pytest.mark.parametrize(
    ("layout", "named"),
    [
        # Captum's reading of 3-D tokens from a 4-D image is refused, naming the reading
        ("none", "--layout tokens:1:14x14"),
        # a wrong prefix count: the tokens do not form the grid
        ("tokens:0:14x14", "--layout tokens:P:HxW"),
        # channels last on tokens
        ("channels_last", "--layout tokens"),
    ],
)
def test_explain_refusals_name_the_layout_option(
    tmp_path, capsys, vit_weights, layout, named
) -> None:
    out = tmp_path / "out"
    argv = ["explain", "coffee", "--model", f"timm/{VIT}", "--weights", str(vit_weights)]
    _fails([*argv, "-q", "-o", str(out), "--layout", layout], capsys, named)
    assert not out.exists()


def test_explain_refuses_a_bad_spelling_before_loading(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    _fails(["explain", "coffee", "--layout", "nhwc", "-o", str(out)], capsys, "--layout 'nhwc'")
    assert not out.exists()


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> tuple[Path, Path]:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("cnn")
    weights = root / "tiny.pt"
    torch.save(timm.create_model(CNN, num_classes=1000).state_dict(), weights)
    folders = {"coffee": "n01440764", "chelsea": "goldfish"}
    write_dataset(root / "classes", 4, folders, seed=1, size=48)
    return weights, root / "classes"


def _compare(cnn, out: Path, *extra: str) -> list[str]:
    weights, data = cnn
    model = ["--model", CNN, "--weights", str(weights), "--workers", "0", "-q"]
    return ["compare", str(data), "-o", str(out), "--methods", "gradcam,hirescam", *model, *extra]


def test_compare_records_the_layout_and_refuses_another_on_resume(tmp_path, cnn, capsys) -> None:
    out = tmp_path / "out"
    assert cli.main(_compare(cnn, out, "--layout", "channels_first", "--batch-size", "2")) == 0
    assert read_manifest(out)["settings"]["layout"] == "channels_first"
    assert "read with `--layout channels_first`" in (out / "report.md").read_text()
    resume = ["compare", "-o", str(out), "--resume", "-q", "--workers", "0"]
    _fails(
        [*resume, "--layout", "auto"],
        capsys,
        "--layout auto: it was started with channels_first",
    )


def test_compare_refusal_names_the_layout_option(tmp_path, cnn, capsys) -> None:
    out = tmp_path / "out"
    # a conv's (N, C, h, w) read as channels last: the message names the reading that fits
    _fails(_compare(cnn, out, "--layout", "channels_last"), capsys, "--layout channels_first")


def test_run_recorded_before_layout_resumes_as_auto(tmp_path, cnn) -> None:
    out = tmp_path / "out"
    assert cli.main(_compare(cnn, out, "--batch-size", "2")) == 0
    manifest = read_manifest(out)
    assert manifest["settings"]["layout"] == "auto"
    del manifest["settings"]["layout"]
    manifest["state"] = "running"
    (out / MANIFEST).write_text(json.dumps(manifest))
    (part,) = sorted((out / "parts").glob("*.jsonl"))
    records = [json.loads(line) for line in part.read_text().splitlines()]
    for record in records:
        del record["settings"]["layout"]
    part.write_text("".join(json.dumps(r) + "\n" for r in records[:1]))  # killed after one
    resume = ["compare", "-o", str(out), "--resume", "-q", "--workers", "0"]
    assert cli.main([*resume, "--layout", "auto"]) == 0
    assert read_manifest(out)["settings"]["layout"] == "auto"


def test_settings_without_layout_take_auto_and_refuse_another(tmp_path) -> None:
    args = cli.build_parser().parse_args(["compare", "-o", str(tmp_path), "--layout", "none"])
    previous = {"methods": parse_methods(None)}  # recorded before --layout
    with pytest.raises(RunFolderError, match="--layout none: it was started with auto"):
        settings_from(args, previous, parse_methods)
    args = cli.build_parser().parse_args(["compare", "-o", str(tmp_path)])
    settings = settings_from(args, previous, parse_methods)
    assert settings.layout == "auto" and settings.layout_spec == "auto"
    # one spelling per layout: " Tokens:1 " is recorded as tokens:1
    args = cli.build_parser().parse_args(["compare", "-o", str(tmp_path), "--layout", " Tokens:1 "])
    assert settings_from(args, None, parse_methods).layout == "tokens:1"


# ---------------------------------------------------- every layout= a refusal names, as --layout

#: A selector the core names and the option the CLI puts after it.
_NAMED = re.compile(
    r"(?:layout=)?(TokenLayout\((?:[^()]|\([^()]*\))*\)|'\w+'|None) \(--layout ([^)\s]+)\)"
)


def _options_match_selectors(err: str) -> list[str]:
    """Each ``layout=`` of ``err`` has its ``--layout`` beside it, and that option parses to the
    layout the selector builds (read here with eval, apart from :func:`parse_layout`)."""
    options = []
    for match in _NAMED.finditer(err):
        selector, option = match.groups()
        options.append(option)
        if option == "tokens:P:HxW":
            assert selector in (
                "TokenLayout(prefix_tokens=..., grid=...)",
                "TokenLayout(prefix_tokens, grid)",
            )
            continue
        built = eval(selector, {"TokenLayout": TokenLayout})  # noqa: S307 - the test's own text
        assert parse_layout(option) == built, (selector, option)
    rest = _NAMED.sub("", err)
    assert "layout=" not in rest.replace("layout= (--layout LAYOUT)", ""), err
    assert "TokenLayout(" not in rest, err
    return options


@pytest.fixture(scope="module")
def ambiguous_vit(tmp_path_factory) -> Path:
    """A Hugging Face ViT of 32 x 32 images, 16 x 16 patches: 5 tokens, which the shapes read as
    1 prefix + 2 x 2 or as 4 prefix + 1 x 1; the model's attributes say the first."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    labels = ["cat", "dog", "cup"]
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=16,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    folder = tmp_path_factory.mktemp("hf") / "vit32"
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    return folder


def _explain_folder(
    tmp_path, capsys, monkeypatch, folder: Path, *extra: str
) -> tuple[int, str, dict]:
    drawn: dict = {}
    real = figures.overlay_figure

    def spy(image, heatmaps, title):
        drawn.update(heatmaps)
        return real(image, heatmaps, title)

    monkeypatch.setattr(figures, "overlay_figure", spy)
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
    argv = ["explain", "coffee", "--model", str(folder), "--methods", "gradcam,layercam", "-q"]
    status = cli.main([*argv, "-o", str(out), *extra])
    return status, capsys.readouterr().err, drawn


def test_a_refusal_at_an_ambiguous_size_names_the_option_that_reads_it(
    tmp_path, capsys, monkeypatch, ambiguous_vit
) -> None:
    status, err, _ = _explain_folder(
        tmp_path, capsys, monkeypatch, ambiguous_vit, "--layout", "none"
    )
    assert status == errors.USAGE_ERROR
    assert "looks like transformer tokens" in err
    assert _options_match_selectors(err) == ["auto", "tokens:1:2x2", "channels_first"]
    assert "tokens:4" not in err  # the model states one prefix token: 4 + 1 x 1 is not offered
    # the option the message names draws the maps that auto draws
    status, _, auto = _explain_folder(tmp_path, capsys, monkeypatch, ambiguous_vit)
    assert status == 0
    status, _, named = _explain_folder(
        tmp_path, capsys, monkeypatch, ambiguous_vit, "--layout", "tokens:1:2x2"
    )
    assert status == 0 and auto.keys() == named.keys() == {"Grad-CAM", "LayerCAM"}
    for method in auto:
        torch.testing.assert_close(named[method], auto[method])


def test_a_layer_the_attributes_contradict_names_each_reading_as_an_option(
    tmp_path, capsys, monkeypatch, ambiguous_vit
) -> None:
    """The patch embedding's (N, 4, D) has no class token, which the model states: auto lists
    the readings of the shapes, each with its option, and the right one then reads it."""
    layer = ["--layer", "vit.embeddings.patch_embeddings"]
    status, err, _ = _explain_folder(tmp_path, capsys, monkeypatch, ambiguous_vit, *layer)
    assert status == errors.USAGE_ERROR and "contradict" in err
    assert _options_match_selectors(err) == ["tokens:0:2x2", "tokens:3:1x1"]
    status, _, named = _explain_folder(
        tmp_path, capsys, monkeypatch, ambiguous_vit, *layer, "--layout", "tokens:0:2x2"
    )
    assert status == 0 and named["Grad-CAM"].shape[-2:] == (32, 32)


def test_channels_first_on_tokens_is_refused_as_a_line_not_drawn(
    tmp_path, capsys, monkeypatch, ambiguous_vit
) -> None:
    """Captum's reading of (N, 5, D) tokens is a line of D values: no image grid to draw."""
    status, err, drawn = _explain_folder(
        tmp_path, capsys, monkeypatch, ambiguous_vit, "--layout", "channels_first"
    )
    assert status == errors.USAGE_ERROR and not drawn
    assert "has shape (1, 1, 16)" in err and "one line of 16 values" in err
    assert _options_match_selectors(err) == ["channels_first", "auto"]


class _Windows(nn.Module):
    """(N, C, 4, 4) cut into 2 windows of 8 tokens, (N, 2, 8, C): window attention's layout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).reshape(len(x), 2, 8, x.shape[1])


def _core_refusals() -> dict[str, ValueError]:
    """One real refusal of each kind the core raises for an image model, by its name."""
    torch.manual_seed(0)
    found: dict[str, ValueError] = {}

    def refusal(kind: str, model: nn.Module, layer: nn.Module, x: torch.Tensor, layout) -> None:
        with pytest.raises(ValueError) as caught:
            LayerGradCam(model.eval(), layer, layout=layout).attribute(x, target=[0, 1])
        found[kind] = caught.value

    opaque = lf.Opaque(nn.Sequential(nn.Conv2d(3, 4, 8), nn.AdaptiveAvgPool2d((8, 16))))
    shape_only = nn.Sequential(opaque, nn.Flatten(), nn.Linear(4 * 8 * 16, 5))
    refusal(
        "auto: the probe contradicts each reading",
        shape_only,
        opaque,
        torch.randn(2, 3, 32, 64),
        "auto",
    )
    odd = lf.Tokens(prefix=26, patch=8)  # 26 + 2 x 2 tokens: no P <= 8 fits
    refusal("auto: no reading", odd, odd.norm, torch.randn(2, 3, 16, 16), "auto")
    refusal("none: 3-D, no token grid", odd, odd.norm, torch.randn(2, 3, 16, 16), None)
    windows = lf.Opaque(nn.Sequential(nn.Conv2d(3, 6, 8, stride=8), _Windows()))
    cut = nn.Sequential(windows, nn.Flatten(), nn.Linear(96, 5))
    refusal("none: partitioned windows", cut, windows, torch.randn(2, 3, 32, 32), None)
    tokens = lf.Tokens(prefix=1, patch=8)
    refusal(
        "tokens: the model states no prefix count",
        tokens,
        tokens.norm,
        torch.randn(2, 3, 16, 16),
        "tokens",
    )
    refusal(
        "a TokenLayout whose count does not form the grid",
        tokens,
        tokens.norm,
        torch.randn(2, 3, 16, 16),
        TokenLayout(0, (2, 2)),
    )
    return found


def test_every_core_refusal_names_its_options_on_the_command_line(capsys) -> None:
    for kind, refusal in _core_refusals().items():

        def command(refusal: ValueError = refusal) -> None:
            raise UsageError(str(refusal)) from refusal  # as explain and compare pass it on

        assert cli.exit_status(command) == errors.USAGE_ERROR
        err = capsys.readouterr().err
        assert err.startswith("camplus: error: the layer tensor") or "layout" in err, (kind, err)
        assert _options_match_selectors(err), (kind, err)

        # a failure (a refusal met while scoring) is told the same way
        def failing(refusal: ValueError = refusal) -> None:
            raise refusal

        assert cli.exit_status(failing) == errors.FAILURE
        assert _options_match_selectors(capsys.readouterr().err), kind
