"""``camplus explain|compare --scores``: a binary model with one output (a local Hugging Face
folder with one label) is refused up front under softmax, and scored with ``--scores sigmoid``;
the choice is a setting of the run (manifest, report, ``--resume``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("timm")
pytest.importorskip("torchvision")
pytest.importorskip("matplotlib")
pytest.importorskip("transformers")
from hugging_face_folders import vit_folder  # noqa: E402

from camplus_app import cli, errors, zoo  # noqa: E402
from camplus_app.images import sample_images  # noqa: E402
from metrics.confidence import SCORES  # noqa: E402


@pytest.fixture(scope="module")
def binary_folder(tmp_path_factory) -> Path:
    return vit_folder(tmp_path_factory.mktemp("hf") / "binary", ["defect"])


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_the_command_offers_the_metrics_score_kinds() -> None:
    parser = cli.build_parser()
    for kind in SCORES:
        assert parser.parse_args(["compare", "--scores", kind]).scores == kind
    with pytest.raises(errors.UsageError, match="choose from 'softmax', 'sigmoid', 'raw'"):
        parser.parse_args(["compare", "--scores", "probabilities"])


@pytest.mark.parametrize("command", ["explain", "compare"])
def test_softmax_of_one_output_is_a_usage_error_before_anything_runs(
    tmp_path, binary_folder, capsys, command
) -> None:
    out = tmp_path / "out"
    argv = [command, "coffee", "--model", str(binary_folder), "--methods", "gradcam"]
    assert cli.main([*argv, "-q", "-o", str(out)]) == errors.USAGE_ERROR
    error = capsys.readouterr().err
    assert "one output per image" in error and "--scores sigmoid" in error
    assert not out.exists()


@pytest.mark.parametrize(("scores", "column"), [("sigmoid", "probability"), ("raw", "score")])
def test_explain_scores_a_binary_model_as_asked(tmp_path, binary_folder, scores, column) -> None:
    out = tmp_path / "out"
    argv = ["explain", "coffee", "--model", str(binary_folder), "--methods", "gradcam"]
    assert cli.main([*argv, "--scores", scores, "-q", "-o", str(out)]) == 0
    (row,) = _rows(out / "predictions.csv")
    clf = zoo.load_classifier(str(binary_folder))
    with torch.no_grad():
        logit = clf.model(clf.preprocess([sample_images(["coffee"])["coffee"]])).double()
    expected = torch.sigmoid(logit) if scores == "sigmoid" else logit
    assert row["class_name"] == "defect"
    assert float(row[column]) == pytest.approx(float(expected), abs=1e-6)
    assert json.loads((out / "manifest.json").read_text())["settings"]["scores"] == scores


def test_compare_records_the_scores_and_resume_refuses_another(
    tmp_path, binary_folder, capsys
) -> None:
    pytest.importorskip("quantus")
    out = tmp_path / "out"
    argv = ["compare", "coffee", "chelsea", "--model", str(binary_folder)]
    argv += ["--methods", "gradcam,hirescam", "-q", "-o", str(out)]
    assert cli.main([*argv, "--scores", "sigmoid"]) == 0
    assert json.loads((out / "manifest.json").read_text())["settings"]["scores"] == "sigmoid"
    report = (out / "report.md").read_text()
    assert "| scores | sigmoid |" in report and "sigmoid probabilities" in report
    for other in ("softmax", "raw"):
        assert cli.main([*argv, "--resume", "--scores", other]) == errors.USAGE_ERROR
        assert f"with --scores {other}: it was started with sigmoid" in capsys.readouterr().err
    assert cli.main([*argv, "--resume"]) == 0  # the run's own --scores
