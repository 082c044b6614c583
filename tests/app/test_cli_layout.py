"""``--layout`` of ``camplus explain`` and ``camplus compare``: its spellings, the core's
``layout=`` each gives, the maps it reads, the refusals that name it, and ``--resume``.

Tiny random-init timm models: a ViT-Tiny (197 tokens: a class token and a 14 x 14 grid) and
timm's ``test_efficientnet`` on crops of the bundled photographs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

timm = pytest.importorskip("timm")
pytest.importorskip("skimage")
pytest.importorskip("matplotlib")
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
