"""The chosen metrics of a batch (:mod:`metrics.choices`): the names ``camplus compare
--metrics`` takes, and :class:`metrics.BatchScorer`'s per-image values against
:mod:`metrics.perturbation` called directly on the same maps, and the randomisation check
against scipy's Spearman correlation of float64 maps from a copy randomised by hand."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import metrics
from captum_camplus import upsample_and_normalize
from metrics.choices import PAPERS, RANDOMISATION, STEPS, parse_metrics, refused_metrics
from metrics.heatmaps import MAPS_FROM, compute_cams
from metrics.sanity import RandomisedHead, forward_order, layers_above, rank_agreement
from tests.conftest import Net

METHODS = ["Grad-CAM", "HiResCAM"]


def test_parse_metrics_orders_and_checks_the_names() -> None:
    assert parse_metrics(None) == [PAPERS]
    assert parse_metrics("road-lerf, Deletion") == [PAPERS, "deletion", "road-lerf"]
    assert parse_metrics("all") == [
        PAPERS,
        "deletion",
        "insertion",
        "road-morf",
        "road-lerf",
        "randomisation",
    ]
    assert parse_metrics("randomisation") == [PAPERS, "randomisation"]
    with pytest.raises(ValueError, match="unknown metric 'road'.*road-lerf, randomisation"):
        parse_metrics("road")
    with pytest.raises(ValueError, match="unknown metric ''"):
        parse_metrics("deletion,")


def test_refused_metrics_under_raw_scores_only() -> None:
    """The perturbation metrics need probabilities; the randomisation check compares maps."""
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
    assert list(batch.chosen) == [*expected, RANDOMISATION]
    for column, values in expected.items():
        for k, (source, method) in enumerate(keys):
            torch.testing.assert_close(batch.chosen[column][source][method], values[k])
    records = metrics.records.image_records(batch)
    assert records[0]["ROAD MoRF"]["post-softmax"]["HiResCAM"] == pytest.approx(
        float(expected["ROAD MoRF"][3, 0])
    )


SEED, FIRST = 3, 4


def _by_hand(model: nn.Module, seed: int) -> nn.Module:
    """The model's copy with the layers above ``conv`` re-initialised as the check documents:
    one ``torch.manual_seed``, then each layer's ``reset_parameters()``, top-down."""
    twin = copy.deepcopy(model)
    torch.manual_seed(seed)
    for name in ("fc", "side", "bn"):
        twin.get_submodule(name).reset_parameters()  # type: ignore[operator]
    return twin


def test_randomisation_equals_scipy_spearman_of_float64_maps() -> None:
    """Per image, method and kind of map: scipy's Spearman correlation of the trained model's
    float64 map with the float64 map of a copy randomised by hand from ``seed << 32`` plus the
    batch's first position; EigenCAM, which ignores the weights above the layer, keeps its
    order (1), and the global random state is left as it was."""
    stats = pytest.importorskip("scipy.stats")
    methods = [*METHODS, "EigenCAM"]
    torch.manual_seed(0)
    model = Net(classes=5).eval()
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    scorer = metrics.BatchScorer(model, "conv", methods, metrics=["randomisation"], seed=SEED)
    state = torch.random.get_rng_state()
    batch = scorer(x, None, torch.tensor([FIRST, FIRST + 1, FIRST + 2]))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert list(batch.chosen) == [RANDOMISATION]
    twin = _by_hand(model, (SEED << 32) + FIRST).double()
    trained = copy.deepcopy(model).double()
    for source in MAPS_FROM:
        before = compute_cams(trained, "conv", x.double(), batch.target, methods, source)
        after = compute_cams(twin, "conv", x.double(), batch.target, methods, source)
        for method in methods:
            expected = [
                stats.spearmanr(
                    before[method][i].flatten().numpy(), after[method][i].flatten().numpy()
                ).statistic
                for i in range(len(x))
            ]
            got = batch.chosen[RANDOMISATION][source][method]
            assert got.dtype == torch.float64
            np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(
            batch.chosen[RANDOMISATION][source]["EigenCAM"], torch.ones(3, dtype=torch.float64)
        )
    # a batch that starts elsewhere draws other weights; the same batch the same ones
    other = scorer(x, None, torch.tensor([9, 10, 11])).chosen[RANDOMISATION]
    again = scorer(x, None, torch.tensor([FIRST, FIRST + 1, FIRST + 2])).chosen[RANDOMISATION]
    grad_cam = batch.chosen[RANDOMISATION]["pre-softmax"]["Grad-CAM"]
    assert not torch.equal(other["pre-softmax"]["Grad-CAM"], grad_cam)
    assert torch.equal(again["pre-softmax"]["Grad-CAM"], grad_cam)


def test_randomisation_of_the_kept_images_only_and_in_the_records() -> None:
    """Images below the threshold get no value; the records carry the column."""
    torch.manual_seed(0)
    model = Net(classes=5).eval()
    x = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    full = metrics.BatchScorer(model, "conv", METHODS, metrics=["randomisation"])(x)
    threshold = float(full.y.median())
    scorer = metrics.BatchScorer(
        model, "conv", METHODS, metrics=["randomisation"], threshold=threshold
    )
    batch = scorer(x)
    kept = batch.kept
    assert 0 < int(kept.sum()) < len(x)
    values = batch.chosen[RANDOMISATION]["pre-softmax"]["Grad-CAM"]
    assert values.shape == (int(kept.sum()),)
    records = metrics.records.image_records(batch)
    for record in records:
        assert (RANDOMISATION in record) == record["kept"]


def test_rank_agreement_is_zero_for_a_constant_map() -> None:
    trained = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 2.0, 4.0]])
    randomised = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0], [5.0, 5.0, 5.0, 5.0]])
    got = rank_agreement(trained, randomised)
    torch.testing.assert_close(got, torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64))


def test_layers_above_the_cam_layer() -> None:
    """Registered after the layer and outside it, top-down; none above is refused by name."""
    model = Net(classes=5)
    assert layers_above(model, "conv") == ["fc", "side", "bn"]
    assert layers_above(model, model.bn) == ["fc", "side"]
    with pytest.raises(ValueError, match="no layer with parameters.*'fc'"):
        layers_above(model, "fc")
    with pytest.raises(ValueError, match="no layer with parameters"):
        metrics.BatchScorer(model, "fc", METHODS, metrics=["randomisation"])
    nested = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), nn.Conv2d(4, 2, 1))
    assert layers_above(nested, "0") == ["1"]
    assert layers_above(nested, "0.0") == ["1", "0.1"]


class HeadFirst(nn.Module):
    """Its head is registered before its body; ``unused`` is never called."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.unused = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.conv(x)).mean(dim=(2, 3)))


def recorded(model: nn.Module, layer: str, x: torch.Tensor) -> dict[str, int]:
    with forward_order(model, model.get_submodule(layer)) as order:
        model(x)
    return order


def test_layers_above_in_the_order_of_the_forward() -> None:
    """With the forward's order, "above" is what runs after the layer's output: Net's side
    branch runs before conv, HeadFirst's fc after it (registration order says the opposite),
    a module never called is left alone."""
    x = torch.rand(2, 3, 8, 8)
    model = Net(classes=5)
    assert layers_above(model, "conv", recorded(model, "conv", x)) == ["fc", "bn"]
    head_first = HeadFirst()
    assert layers_above(head_first, "conv") == ["unused", "norm"]  # registration order
    assert layers_above(head_first, "conv", recorded(head_first, "conv", x)) == ["fc", "norm"]
    assert layers_above(head_first, "norm", recorded(head_first, "norm", x)) == ["fc"]
    with pytest.raises(ValueError, match="never called the CAM layer 'unused'"):
        layers_above(head_first, "unused", recorded(head_first, "unused", x))


def test_the_scorer_randomises_the_layers_after_the_cam_layer_in_the_forward() -> None:
    """camplus compare's step records the order in its own forward (no extra pass): HeadFirst's
    fc is randomised, its unused layer is not."""
    torch.manual_seed(0)
    model = HeadFirst().eval()
    x = torch.rand(3, 3, 8, 8)
    scorer = metrics.BatchScorer(model, "conv", ["Grad-CAM"], metrics=["randomisation"])
    scorer(x)
    assert scorer.randomised is not None and scorer.randomised.layers == ["fc", "norm"]
    net, _ = scorer.randomised.draw(5)
    torch.testing.assert_close(net.unused.weight, model.unused.weight, rtol=0, atol=0)
    assert not torch.equal(net.fc.weight, model.fc.weight)


def test_randomised_copy_is_made_once_and_leaves_the_model_alone() -> None:
    torch.manual_seed(0)
    model = Net(classes=5).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head = RandomisedHead(model, "conv")
    net, layer = head.draw(1)
    again, _ = head.draw(2)
    assert again is net and layer is net.conv and not net.training
    assert not any(p.requires_grad for p in net.parameters())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    torch.testing.assert_close(net.conv.weight, model.conv.weight, rtol=0, atol=0)
    assert not torch.equal(net.fc.weight, model.fc.weight)
