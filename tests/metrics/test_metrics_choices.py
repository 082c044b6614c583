"""The chosen perturbation metrics of a batch (:mod:`metrics.choices`): the names
``camplus compare --metrics`` takes, and :class:`metrics.BatchScorer`'s per-image values
against :mod:`metrics.perturbation` called directly on the same maps."""

from __future__ import annotations

import pytest
import torch

import metrics
from captum_camplus import upsample_and_normalize
from metrics.choices import PAPERS, STEPS, parse_metrics, refused_metrics
from metrics.heatmaps import MAPS_FROM, compute_cams
from tests.conftest import Net

METHODS = ["Grad-CAM", "HiResCAM"]


def test_parse_metrics_orders_and_checks_the_names() -> None:
    assert parse_metrics(None) == [PAPERS]
    assert parse_metrics("road-lerf, Deletion") == [PAPERS, "deletion", "road-lerf"]
    assert parse_metrics("all") == [PAPERS, "deletion", "insertion", "road-morf", "road-lerf"]
    with pytest.raises(ValueError, match="unknown metric 'road'.*papers, deletion, insertion"):
        parse_metrics("road")
    with pytest.raises(ValueError, match="unknown metric ''"):
        parse_metrics("deletion,")


def test_refused_metrics_under_raw_scores_only() -> None:
    chosen = parse_metrics("all")
    assert refused_metrics(chosen, "softmax") == {} == refused_metrics(chosen, "sigmoid")
    assert set(refused_metrics(chosen, "raw")) == {
        "deletion",
        "insertion",
        "road-morf",
        "road-lerf",
    }
    assert refused_metrics([PAPERS], "raw") == {}


def test_batch_scorer_chosen_metrics_equal_the_functions_on_the_same_maps() -> None:
    """Every method and kind of map stacked as the scorer stacks them (kinds of map, then
    methods: ROAD's noise follows that order), ROAD's seed ``seed << 32`` plus the batch's first
    position."""
    torch.manual_seed(0)
    model = Net(classes=5).eval()
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    index = torch.tensor([4, 5, 6])
    scorer = metrics.BatchScorer(model, "conv", METHODS, metrics=parse_metrics("all"), seed=3)
    batch = scorer(x, None, index)
    target = batch.target
    maps, keys = [], []
    for source in MAPS_FROM:
        cams = compute_cams(model, "conv", x, target, METHODS, source)
        for method in METHODS:
            maps.append(upsample_and_normalize(cams[method], x.shape[2:]))
            keys.append((source, method))
    stacked = torch.stack(maps)
    seed = (3 << 32) + 4
    with torch.no_grad():
        expected = {
            "deletion AUC": metrics.deletion_auc(model, x, stacked, target, steps=STEPS),
            "insertion AUC": metrics.insertion_auc(model, x, stacked, target, steps=STEPS),
            "ROAD MoRF": metrics.road_curve(model, x, stacked, target, seed=seed).mean(-1),
            "ROAD LeRF": metrics.road_curve(
                model, x, stacked, target, order="least", seed=seed
            ).mean(-1),
        }
    assert list(batch.chosen) == list(expected)
    for column, values in expected.items():
        for k, (source, method) in enumerate(keys):
            torch.testing.assert_close(batch.chosen[column][source][method], values[k])
    records = metrics.records.image_records(batch)
    assert records[0]["ROAD MoRF"]["post-softmax"]["HiResCAM"] == pytest.approx(
        float(expected["ROAD MoRF"][3, 0])
    )
