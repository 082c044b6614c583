"""Score-CAM and Ablation-CAM wherever the metrics read a method: ``compute_cams`` (pre- and
post-softmax), the Quantus ``explain_func`` :func:`metrics.cam_explain` and the scorer of
``evaluate_methods``, each checked against the float64 references of
:mod:`captum_camplus.testing.reference` (Taimeskhanov, Sicre & Garreau 2024, "CAM-based methods
can see through walls", arXiv:2404.01964, definitions 7-8)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from metrics_models import tiny_setup
from torch import nn

import captum_camplus.testing.reference as ref
import metrics
from captum_camplus import METHODS
from metrics.confidence import class_scores
from metrics.heatmaps import cam_explain, compute_cams

PERTURBATION = {"Score-CAM": ref.score_cam, "Ablation-CAM": ref.ablation_cam}


@pytest.fixture(scope="module")
def setup():
    model, images, labels = tiny_setup(n=3, size=8)
    return model, images, labels


def _reference(model: nn.Module, x: torch.Tensor, labels, name: str, post_softmax: bool):
    """The ReLU'd float64 map of ``name`` for the logit or the softmax probability."""
    model64 = copy.deepcopy(model).double()
    scored = nn.Sequential(model64, nn.Softmax(dim=1)) if post_softmax else model64
    found = PERTURBATION[name](scored, model64.layer, x.double(), labels.tolist())
    return np.maximum(found, 0.0)


@pytest.mark.parametrize("maps_from", ["pre-softmax", "post-softmax"])
def test_compute_cams_all_gives_the_perturbation_maps_of_the_score(setup, maps_from):
    model, x, labels = setup
    cams = compute_cams(model, model.layer, x, labels, ["all"], maps_from=maps_from)
    assert list(cams) == list(METHODS)
    for name in PERTURBATION:
        expected = _reference(model, x, labels, name, maps_from == "post-softmax")
        found = cams[name].double().numpy()
        assert np.abs(found - expected).max() <= 1e-5 * np.abs(expected).max(), name


@pytest.mark.parametrize("name", list(PERTURBATION))
def test_cam_explain_gives_the_upsampled_reference(setup, name):
    model, x, labels = setup
    lenient = name.lower().replace("-", "")  # "scorecam", "ablationcam"
    found = cam_explain(model, x.numpy(), labels.numpy(), method=lenient, layer=model.layer)
    cam = torch.from_numpy(_reference(model, x, labels, name, False))
    up = nn.functional.interpolate(cam, size=x.shape[2:], mode="bilinear")
    low, high = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
    expected = ((up - low) / (high - low)).numpy()
    assert found.shape == (3, 1, 8, 8) and found.dtype == np.float32
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-4)


def test_the_scorer_scores_the_perturbation_maps_of_each_kind(setup):
    """``O`` (Lerma & Lucas, eq. 15) of the explanation map of each reference map."""
    model, x, labels = setup
    scorer = metrics.BatchScorer(model, model.layer, ["all"])
    scores = scorer(x, labels)
    for source in ("pre-softmax", "post-softmax"):
        for name in PERTURBATION:
            cam = _reference(model, x, labels, name, source == "post-softmax")
            up = nn.functional.interpolate(torch.from_numpy(cam), size=x.shape[2:], mode="bilinear")
            low, high = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
            explanation = ((up - low) / (high - low) * x.double()).float()
            expected = class_scores(model, explanation, labels).value
            torch.testing.assert_close(
                scores.o[source][name].float(), expected.float(), rtol=1e-4, atol=1e-5
            )
