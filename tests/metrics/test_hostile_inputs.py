"""Hostile input to the metrics (round three): NaN and infinite model scores, integer scores,
NaN thresholds, channels-last images, boolean maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import metrics
from metrics import functional as F
from metrics.confidence import keep_mask


class _Net(nn.Module):
    """A tiny CNN whose scores go through ``last`` (to make them NaN, inf, integers...)."""

    def __init__(self, last=None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 5)
        self.last = last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.conv(x).mean((2, 3)))
        return y if self.last is None else self.last(y)


X = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("last", "match"),
    [
        (lambda y: y * math.nan, "returned NaN scores for 2 of 2 images"),
        (
            lambda y: torch.where(y[:, :1] > -1e9, y, y).index_fill(0, torch.tensor([1]), math.inf),
            r"returned \+inf scores for 1 of 2 images \(batch positions 1\)",
        ),
        (lambda y: (y * 100).long(), "returned torch.int64 scores"),
    ],
)
def test_undefined_model_scores_are_refused_by_name(last, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        metrics.class_scores(_Net(last), X, 0)


def test_nan_scores_are_never_counted_below_a_threshold() -> None:
    nan_model = _Net(lambda y: y * math.nan).eval()
    with pytest.raises(ValueError, match="NaN scores") as caught:
        metrics.evaluate_methods(nan_model, nan_model.conv, X, threshold=0.5)
    assert "0 or below" not in str(caught.value) and "above the threshold" not in str(caught.value)


def test_a_nan_log_score_is_not_called_a_score_of_zero() -> None:
    with pytest.raises(ValueError, match="NaN values") as caught:
        F.relative_performance(torch.tensor([math.nan]), torch.tensor([0.0]))
    assert "0 or below" not in str(caught.value)


@pytest.mark.parametrize("threshold", [math.nan, np.float32("nan")])
def test_a_nan_threshold_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold is NaN"):
        keep_mask(torch.tensor([0.7]), threshold)


def test_a_string_threshold_is_refused() -> None:
    with pytest.raises(TypeError, match="threshold must be a number"):
        keep_mask(torch.tensor([0.7]), "0.5")


def test_channels_last_images_are_refused_before_the_model_fails() -> None:
    net = _Net().eval()
    channels_last = X.permute(0, 2, 3, 1).numpy()  # what an image library gives
    with pytest.raises(ValueError, match=r"look channels last \(N, H, W, C\).*np.moveaxis"):
        metrics.cam_explain(net, channels_last, np.array([0, 1]), method="Grad-CAM", layer=net.conv)


def test_channels_last_x_batch_through_quantus_evaluate() -> None:
    quantus = pytest.importorskip("quantus")
    net = _Net().eval()
    with pytest.raises(ValueError, match="look channels last"):
        quantus.evaluate(
            metrics={"AD": metrics.AverageDrop()},
            xai_methods={"Grad-CAM": metrics.cam_explain},
            model=net,
            x_batch=X.permute(0, 2, 3, 1).numpy(),
            y_batch=np.array([0, 1]),
            explain_func_kwargs={"layer": net.conv},
            agg_func=lambda scores: scores[0],
        )


def test_channels_first_images_with_three_columns_are_not_mistaken() -> None:
    net = _Net().eval()  # (N, 3, H, 3): channels first, whatever the last axis says
    maps = metrics.cam_explain(
        net, torch.rand(2, 3, 8, 3).numpy(), np.array([0, 1]), method="Grad-CAM", layer=net.conv
    )
    assert maps.shape == (2, 1, 8, 3)


def test_boolean_maps_have_a_dead_zone_mass() -> None:
    maps = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    maps[..., 2:, :] = True
    unseen = torch.zeros(4, 4, dtype=torch.bool)
    unseen[2:] = True
    assert float(F.dead_zone_mass(maps, unseen)) == 1.0


def test_evaluate_methods_takes_a_numpy_array_as_its_tensor() -> None:
    net = _Net().eval()
    result = metrics.evaluate_methods(net, net.conv, X.numpy(), labels=np.array([0, 1]))
    assert result.images_seen == 2 and result.target.tolist() == [0, 1]


def test_evaluate_methods_takes_a_loader_of_one_tuples() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    net = _Net().eval()
    loader = DataLoader(TensorDataset(X), batch_size=2)  # images only: the predicted class
    assert metrics.evaluate_methods(net, net.conv, loader, progress=False).images_seen == 2


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([{"image": X[0], "label": 0}], r"batch 0 of the data is a dict \(keys image, label\)"),
        ([["not", "tensors"]], "batch 0 of the data is a list of str"),
        ("images/", "data must be images .* got str"),
        (3, "data must be images .* got int"),
    ],
)
def test_evaluate_methods_names_data_it_cannot_take(data, match: str) -> None:
    net = _Net().eval()
    with pytest.raises(TypeError, match=match):
        metrics.evaluate_methods(net, net.conv, data, progress=False)
