"""``camplus explain`` and ``camplus compare`` with ``--methods all``: Score-CAM and
Ablation-CAM (Taimeskhanov, Sicre & Garreau 2024, arXiv:2404.01964, definitions 7-8) beside the
gradient methods. A tiny random-init timm model stands in for the bundled EfficientNet, at a
layer of 64 channels; the maps' formulas are checked against float64 references in
tests/core/test_catalogue_perturbation.py and tests/metrics/test_metrics_catalogue_perturbation.py.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

timm = pytest.importorskip("timm")
pytest.importorskip("skimage")
pytest.importorskip("matplotlib")
pytest.importorskip("quantus")
from benchmarks.make_dataset import write_dataset  # noqa: E402
from camplus_app import cli, zoo  # noqa: E402
from camplus_app.images import sample_images  # noqa: E402
from captum_camplus import METHODS, LayerAblationCam, LayerScoreCam  # noqa: E402
from captum_camplus.maps import upsample_and_normalize  # noqa: E402

ARCH, LAYER = "test_efficientnet", "blocks.4"
PERTURBATION = {"Score-CAM": LayerScoreCam, "Ablation-CAM": LayerAblationCam}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(timm.create_model(ARCH, num_classes=1000).state_dict(), path)
    return path


def _model(weights: Path) -> list[str]:
    return ["--model", ARCH, "--weights", str(weights), "--layer", LAYER, "-q"]


def test_explain_all_draws_every_method_and_the_perturbation_maps(
    tmp_path, figure_calls, weights
) -> None:
    drawn = figure_calls("overlay_figure")
    out = tmp_path / "out"
    argv = ["explain", "coffee", "-o", str(out), "--methods", "all", *_model(weights)]
    assert cli.main(argv) == 0
    assert json.loads((out / "manifest.json").read_text())["settings"]["methods"] == list(METHODS)
    image, heatmaps, _ = drawn["coffee"]
    assert list(heatmaps) == list(METHODS)
    clf = zoo.load_classifier(ARCH, weights, LAYER)
    x = clf.preprocess([sample_images(["coffee"])["coffee"]])
    torch.testing.assert_close(image, x[0])
    target = int(clf.model(x).argmax(dim=1))
    for name, cls in PERTURBATION.items():
        cam = cls(clf.model, clf.layer).attribute(x, target=target, relu_attributions=True)
        expected = upsample_and_normalize(cam, x.shape[-2:])[0]
        torch.testing.assert_close(heatmaps[name], expected, atol=1e-5, rtol=0)


def test_compare_all_scores_every_method_of_both_kinds(tmp_path_factory, weights) -> None:
    data = tmp_path_factory.mktemp("data") / "classes"
    write_dataset(data, 1, {"coffee": "n01440764"}, seed=1, size=48)  # one image: fast
    out = tmp_path_factory.mktemp("compare") / "out"
    argv = ["compare", str(data), "-o", str(out), "--methods", "all", "--workers", "0"]
    assert cli.main([*argv, *_model(weights)]) == 0
    with (out / "scores.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(r["maps"], r["method"]) for r in rows] == [
        (kind, name) for kind in ("pre-softmax", "post-softmax") for name in METHODS
    ]
    assert all(math.isfinite(float(r["average drop"])) for r in rows)
    with (out / "images.csv").open(newline="") as file:
        per_image = [r for r in csv.DictReader(file) if r["method"] in PERTURBATION]
    assert len(per_image) == 2 * 2  # kinds x methods
    assert all(0 < float(r["O"]) <= 1 for r in per_image)
