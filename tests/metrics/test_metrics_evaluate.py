"""The evaluation driver against an independent float64 computation, and its options."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as tF
from metrics_models import tiny_setup
from torch.utils.data import DataLoader, TensorDataset

import captum_camplus
from captum_camplus import LayerGradCam, LayerGradCamPlusPlus, LayerHiResCam
from captum_camplus.masking import bottom_rows
from metrics import BatchScorer, EvaluationResult, evaluate_methods

METHODS = list(captum_camplus.DEFAULT_METHODS)  # evaluate_methods' default


def log_score(model, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = model(inputs).double()
    return torch.log_softmax(logits, 1).gather(1, labels[:, None])[:, 0]


def heatmap(cam: torch.Tensor, size: int) -> torch.Tensor:
    up = tF.interpolate(cam.detach().double(), size=(size, size), mode="bilinear")
    flat = up.flatten(1)
    low, high = flat.min(1).values[:, None], flat.max(1).values[:, None]
    return ((flat - low) / (high - low)).view_as(up)


@pytest.fixture(scope="module")
def setup():
    model, images, labels = tiny_setup(n=7, dead_rows=2)
    result = evaluate_methods(
        model,
        model.layer,
        images,
        labels=labels,
        unseen=bottom_rows(16, 16, 4),
        batch_size=3,  # batches of 3, 3 and 1
        progress=False,
    )
    return model, images, labels, result


@pytest.mark.parametrize("source", ["pre-softmax", "post-softmax"])
@pytest.mark.parametrize(
    ("method", "cls"),
    [("Grad-CAM", LayerGradCam), ("Grad-CAM++", LayerGradCamPlusPlus), ("HiResCAM", LayerHiResCam)],
)
def test_per_image_scores_match_an_independent_computation(setup, source, method, cls) -> None:
    model, images, labels, result = setup
    forward = model if source == "pre-softmax" else (lambda x: torch.softmax(model(x), 1))
    cam = cls(forward, model.layer).attribute(images, labels, relu_attributions=True)
    heat = heatmap(cam, 16)
    log_o = log_score(model, (heat * images.double()).float(), labels)
    log_y = log_score(model, images, labels)
    torch.testing.assert_close(result.log_y, log_y)
    torch.testing.assert_close(result.y, log_y.exp())
    torch.testing.assert_close(result.log_o[source][method], log_o)
    torch.testing.assert_close(result.o[source][method], log_o.exp())
    unseen = heat[:, :, 12:].flatten(1).norm(dim=1) / heat.flatten(1).norm(dim=1)
    torch.testing.assert_close(result.dead_zone[source][method], unseen)
    assert result.index.tolist() == list(range(7)) and result.target.tolist() == labels.tolist()


def test_summary_rows_by_hand(setup) -> None:
    _, _, _, result = setup
    rows = result.summary()
    assert [(r["maps"], r["method"]) for r in rows] == [
        (s, m) for s in ("pre-softmax", "post-softmax") for m in METHODS
    ]
    y = result.y.tolist()
    for source in ("pre-softmax", "post-softmax"):
        o = {m: result.o[source][m].tolist() for m in METHODS}
        wins = dict.fromkeys(METHODS, 0.0)
        for i in range(7):
            best = max(o[m][i] for m in METHODS)
            winners = [m for m in METHODS if best - o[m][i] <= 1e-4 * best]
            for m in winners:
                wins[m] += 100 / len(winners) / 7
        for row in (r for r in rows if r["maps"] == source):
            m = row["method"]
            drop = sum(100 * max(0.0, a - b) / a for a, b in zip(y, o[m], strict=True)) / 7
            increase = 100 * sum(b > a for a, b in zip(y, o[m], strict=True)) / 7
            assert row["average drop"] == pytest.approx(drop, rel=1e-12)
            assert row["increase in confidence"] == pytest.approx(increase)
            assert row["win percentage"] == pytest.approx(wins[m], rel=1e-12)
            assert row["dead zone mass"] == pytest.approx(result.dead_zone[source][m].mean().item())
            assert row["images"] == 7
    # rtol=0: exact ties only
    o = torch.stack([result.o["pre-softmax"][m] for m in METHODS])
    winners = (o == o.amax(0)).double()
    exact = 100 * (winners / winners.sum(0)).mean(1)
    pre_softmax = result.summary(win_rtol=0)[: len(METHODS)]
    for row, expected in zip(pre_softmax, exact.tolist(), strict=True):
        assert row["win percentage"] == pytest.approx(expected)


def test_relative_performance_table_in_the_shape_of_lerma_lucas_tables(setup) -> None:
    _, _, _, result = setup
    rows = result.relative_performance()
    pairs = [r["methods"] for r in rows if r["maps"] == "pre-softmax"]
    assert pairs[:6] == [  # then the pairs of any further registered method
        "Grad-CAM+ vs Grad-CAM",
        "Grad-CAM++ vs Grad-CAM",
        "Grad-CAM++ vs Grad-CAM+",
        "HiResCAM vs Grad-CAM",
        "HiResCAM vs Grad-CAM+",
        "HiResCAM vs Grad-CAM++",
    ]
    assert len(rows) == len(METHODS) * (len(METHODS) - 1)  # two kinds of maps, every pair
    row = next(r for r in rows if r["maps"] == "post-softmax" and r["methods"] == pairs[2])
    logs = [
        math.log(a / b)
        for a, b in zip(
            result.o["post-softmax"]["Grad-CAM++"].tolist(),
            result.o["post-softmax"]["Grad-CAM+"].tolist(),
            strict=True,
        )
    ]
    mean = sum(logs) / len(logs)
    assert row["relative performance"] == pytest.approx(math.exp(mean), rel=1e-9)
    assert row["log mean"] == pytest.approx(mean, rel=1e-6, abs=1e-12)
    std = math.sqrt(sum((v - mean) ** 2 for v in logs) / len(logs))
    assert row["log std"] == pytest.approx(std, rel=1e-6, abs=1e-12)


def test_rows_and_text(setup) -> None:
    _, _, _, result = setup
    assert isinstance(result, EvaluationResult)
    rows = result.image_rows()
    assert len(rows) == 7 * 2 * len(METHODS)
    assert set(rows[0]) >= {"index", "target", "maps", "method", "Y", "O", "log O", "drop %"}
    text = str(result)
    assert "7 of 7 images" in text and "HiResCAM vs Grad-CAM++" in text and "dead zone mass" in text


def test_dataloader_and_predicted_classes_give_the_same_result(setup) -> None:
    model, images, labels, result = setup
    loader = DataLoader(TensorDataset(images, labels), batch_size=4)
    from_loader = evaluate_methods(
        model, model.layer, loader, maps_from=["post-softmax"], progress=False
    )
    predicted = evaluate_methods(
        model, model.layer, images, maps_from=["post-softmax"], progress=True
    )
    for other in (from_loader, predicted):
        assert other.index.tolist() == list(range(7))
        for method in METHODS:
            torch.testing.assert_close(
                other.log_o["post-softmax"][method], result.log_o["post-softmax"][method]
            )
    images_only = DataLoader(images, batch_size=5)
    only = evaluate_methods(
        model, model.layer, images_only, ["HiResCAM"], maps_from=["pre-softmax"], progress=False
    )
    torch.testing.assert_close(
        only.o["pre-softmax"]["HiResCAM"], result.o["pre-softmax"]["HiResCAM"]
    )
    assert math.isnan(only.summary()[0]["win percentage"]) and only.relative_performance() == []


def test_threshold_keeps_images_above_it(setup) -> None:
    model, images, labels, result = setup
    threshold = float(result.y.median())
    kept = evaluate_methods(
        model, model.layer, images, labels=labels, threshold=threshold, batch_size=2, progress=False
    )
    expected = (result.y > threshold).nonzero()[:, 0]
    assert kept.index.tolist() == expected.tolist() and kept.images_seen == 7
    torch.testing.assert_close(
        kept.o["pre-softmax"]["Grad-CAM+"], result.o["pre-softmax"]["Grad-CAM+"][expected]
    )
    assert f"(score > {threshold})" in str(kept)
    with pytest.raises(ValueError, match="no image has a score Y above the threshold 1.0"):
        evaluate_methods(model, model.layer, images, labels=labels, threshold=1.0, progress=False)


def test_method_factories_and_layer_names(setup) -> None:
    model, images, labels, _ = setup
    import functools

    methods = {
        "paper alphas": functools.partial(LayerGradCamPlusPlus, alpha="paper"),
        "Grad-CAM": LayerGradCam,
    }
    result = evaluate_methods(
        model,
        "features.3",
        images,
        methods,
        labels=labels,
        maps_from=["pre-softmax"],
        progress=False,
    )
    assert result.methods == ["paper alphas", "Grad-CAM"]
    assert [r["methods"] for r in result.relative_performance()] == ["Grad-CAM vs paper alphas"]


def test_bad_arguments(setup) -> None:
    model, images, labels, _ = setup
    with pytest.raises(ValueError, match="maps_from"):
        evaluate_methods(model, model.layer, images, maps_from=["softmax"], progress=False)
    with pytest.raises(ValueError, match="distinct and non-empty"):
        evaluate_methods(model, model.layer, images, methods=[], progress=False)
    with pytest.raises(TypeError, match="single string"):
        evaluate_methods(model, model.layer, images, methods="Grad-CAM", progress=False)
    with pytest.raises(ValueError, match="labels go with tensor data"):
        evaluate_methods(model, model.layer, DataLoader(images), labels=labels, progress=False)
    with pytest.raises(ValueError, match="unseen must be one mask"):
        evaluate_methods(model, model.layer, images, unseen=torch.ones(7, 16, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="holds no images"):
        evaluate_methods(model, model.layer, images[:0], progress=False)
    with pytest.raises(ValueError, match="got 3 labels for 7 images"):
        evaluate_methods(model, model.layer, images, labels=labels[:3], progress=False)
    with torch.no_grad():
        worst = model(images).argmin(dim=1)  # negative logits: no relative drop
    raw = evaluate_methods(model, model.layer, images, labels=worst, scores="raw", progress=False)
    assert bool((raw.y < 0).any())
    row = raw.summary()[0]  # raw scores leave average drop undefined: n/a, never a raise
    assert math.isnan(row["average drop"]) and "average drop" in raw.undefined
    model.train()
    try:  # evaluated in eval mode, the model left in train mode (tests/test_hostile.py)
        evaluate_methods(
            model, model.layer, images[:1], ["Grad-CAM"], labels=labels[:1], progress=False
        )
        assert model.training
    finally:
        model.eval()


def test_scores_is_the_one_option_for_how_y_and_o_are_scored(setup) -> None:
    model, images, labels, _ = setup
    with pytest.raises(TypeError, match="unexpected keyword argument 'softmax'"):
        evaluate_methods(model, model.layer, images, softmax=False, progress=False)
    with pytest.raises(TypeError, match="unexpected keyword argument 'softmax'"):
        BatchScorer(model, model.layer, softmax=True)
    with pytest.raises(TypeError, match="not a kind of score"):
        BatchScorer(model, model.layer, scores=False)  # type: ignore[arg-type]
    assert BatchScorer(model, model.layer, scores="raw").scores == "raw"


def _count_passes(model, layer):
    """Images through the model's forward, and backwards through its output to the layer (a
    hook on the output tensor runs once per backward that starts there)."""
    counts = {"forward images": 0, "backwards": 0}

    def forward(module, args):
        counts["forward images"] += args[0].shape[0]

    def output(module, args, out):
        if out.requires_grad:
            out.register_hook(lambda grad: counts.__setitem__("backwards", counts["backwards"] + 1))

    handles = [model.register_forward_pre_hook(forward), model.register_forward_hook(output)]
    return counts, handles


def test_passes_per_image_one_forward_two_backwards_and_two_per_method(setup) -> None:
    model, images, labels, _ = setup
    counts, handles = _count_passes(model, model.layer)
    try:
        evaluate_methods(model, model.layer, images, labels=labels, batch_size=7, progress=False)
        assert counts == {"forward images": 7 * (1 + 2 * len(METHODS)), "backwards": 2}
        counts.update({"forward images": 0, "backwards": 0})
        evaluate_methods(
            model,
            model.layer,
            images,
            ["Grad-CAM"],
            labels=labels,
            maps_from=["post-softmax"],
            batch_size=7,
            progress=False,
        )
        assert counts == {"forward images": 7 * (1 + 1), "backwards": 1}
        # below the threshold: only the first forward; no image kept: no backward at all
        counts.update({"forward images": 0, "backwards": 0})
        scorer = BatchScorer(model, model.layer, threshold=1.0)
        batch = scorer(images, labels)
        assert counts == {"forward images": 7, "backwards": 0}
        assert not batch.kept.any() and batch.y.shape == (7,)
    finally:
        for handle in handles:
            handle.remove()


def test_batch_scorer_streams_the_same_numbers_and_reports_the_layer(setup) -> None:
    model, images, labels, result = setup
    seen = []

    def on_layer(source, index, activation, gradient):
        seen.append((source, index.tolist(), activation.shape, gradient.shape))
        assert not activation.requires_grad and not gradient.requires_grad

    threshold = float(result.y.median())
    scorer = BatchScorer(model, model.layer, threshold=threshold, on_layer=on_layer)
    assert scorer.names == METHODS
    batch = scorer(images[2:6], labels[2:6], torch.arange(2, 6)).cpu()
    assert batch.index.tolist() == [2, 3, 4, 5] and batch.target.tolist() == labels[2:6].tolist()
    torch.testing.assert_close(batch.log_y, result.log_y[2:6])
    kept = (result.y[2:6] > threshold).nonzero()[:, 0]
    assert batch.kept.nonzero()[:, 0].tolist() == kept.tolist()
    for source in ("pre-softmax", "post-softmax"):
        for method in METHODS:
            torch.testing.assert_close(
                batch.log_o[source][method], result.log_o[source][method][2:6][kept]
            )
    assert batch.dead_zone is None
    kept_index = (kept + 2).tolist()
    assert [(s, i) for s, i, _, _ in seen] == [
        ("pre-softmax", kept_index),
        ("post-softmax", kept_index),
    ]
    assert seen[0][2] == seen[0][3] == (len(kept_index), 8, 8, 8)


def test_on_layer_gives_the_grad_cam_plus_plus_alphas(setup) -> None:
    model, images, labels, _ = setup
    alphas = {}

    def on_layer(source, index, activation, gradient):
        alphas[source] = LayerGradCamPlusPlus(model, model.layer).alphas(activation, gradient)

    evaluate_methods(
        model,
        model.layer,
        images,
        ["Grad-CAM++"],
        labels=labels,
        on_layer=on_layer,
        batch_size=7,
        progress=False,
    )
    capture = captum_camplus.LayerCapture(model, model.layer, images)
    (gradient,) = capture.gradients(capture.outputs.gather(1, labels[:, None]))
    cam = LayerGradCamPlusPlus(model, model.layer)
    torch.testing.assert_close(alphas["pre-softmax"], cam.alphas(capture.activation, gradient))


def test_layer_pass_errors(setup) -> None:
    model, images, labels, _ = setup
    unused = torch.nn.Conv2d(3, 3, 1)
    with pytest.raises(ValueError, match="was not called by the forward pass"):
        evaluate_methods(model, unused, images, progress=False)
    frozen = copy.deepcopy(model).requires_grad_(False)
    ok = evaluate_methods(frozen, frozen.layer, images, labels=labels, batch_size=7, progress=False)
    torch.testing.assert_close(
        ok.log_o["pre-softmax"]["Grad-CAM"], _reference_log_o(model, images, labels)
    )


def _reference_log_o(model, images, labels):
    cam = LayerGradCam(model, model.layer).attribute(images, labels, relu_attributions=True)
    return log_score(model, (heatmap(cam, 16) * images.double()).float(), labels)


def test_a_layer_off_the_path_to_the_scores_is_named(setup) -> None:
    model, images, labels, _ = setup

    class SideBranch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.side = model, torch.nn.Conv2d(3, 2, 1)

        def forward(self, x):
            self.side(x)  # computed, never used
            return self.net(x)

    wrapped = SideBranch().eval()
    with pytest.raises(ValueError, match="does not depend on the output of the layer Conv2d"):
        evaluate_methods(wrapped, wrapped.side, images, labels=labels, progress=False)
