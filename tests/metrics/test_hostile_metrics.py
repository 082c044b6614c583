"""Hostile input to the metrics and Quantus: the right answer or an error in our terms.

The fixtures ``net`` (conv, BatchNorm with foreign statistics, ReLU) and ``x`` are in
``conftest.py``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import quantus
import torch
from metrics_models import tiny_setup
from torch import nn

from captum_camplus import upsample_and_normalize
from captum_camplus.masking import bottom_rows
from metrics import (
    AverageDrop,
    DeadZoneMass,
    RelativePerformance,
    WinPercentage,
    cam_explain,
    class_scores,
    compute_cams,
    evaluate_methods,
)


@pytest.fixture
def tiny():
    model, images, labels = tiny_setup(n=4)
    return model, images, labels


def _call(metric, model, images, labels, layer=None, maps_from="pre-softmax", **kwargs):
    return metric(
        model=model,
        x_batch=images.numpy() if isinstance(images, torch.Tensor) else images,
        y_batch=labels.numpy(),
        explain_func=cam_explain,
        explain_func_kwargs={
            "method": "Grad-CAM++",
            "layer": layer or model.layer,
            "maps_from": maps_from,
        },
        **kwargs,
    )


def _probability_twin(net: nn.Module, outputs: str) -> nn.Module:
    twin = copy.deepcopy(net)
    twin.outputs = outputs
    return twin


def test_probabilities_get_no_second_softmax(net, x):
    probs = _probability_twin(net, "probabilities")
    labels = torch.tensor([0, 1, 2, 3])
    with pytest.raises(
        ValueError, match="already look like probabilities .* scores='probabilities'"
    ):
        _call(AverageDrop(), probs, x, labels, layer=probs.conv)
    with pytest.raises(ValueError, match="Average Drop is undefined for raw outputs"):
        AverageDrop(scores="raw")
    stated = _call(AverageDrop(scores="probabilities"), probs, x, labels, layer=probs.conv)
    expected = _call(AverageDrop(), net, x, labels, layer=net.conv, maps_from="post-softmax")
    assert stated[0] == pytest.approx(expected[0], rel=1e-5)


def test_probabilities_in_the_driver_and_the_post_softmax_maps(net, x):
    probs = _probability_twin(net, "probabilities")
    with pytest.raises(ValueError, match="already look like probabilities"):
        evaluate_methods(probs, probs.conv, x, progress=False)
    with pytest.raises(ValueError, match="already look like probabilities"):
        compute_cams(probs, probs.conv, x, torch.tensor([0, 1, 2, 3]), maps_from="post-softmax")
    stated = evaluate_methods(
        probs, probs.conv, x, scores="raw", maps_from=["pre-softmax"], progress=False
    )
    post = evaluate_methods(net, net.conv, x, maps_from=["post-softmax"], progress=False)
    torch.testing.assert_close(stated.y, post.y)
    for name in stated.methods:
        torch.testing.assert_close(stated.o["pre-softmax"][name], post.o["post-softmax"][name])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_probabilities_detected_in_low_precision_and_log_probabilities_pass(net, x, dtype):
    probs = _probability_twin(net, "probabilities").to(dtype)
    with pytest.raises(ValueError, match="already look like probabilities"):
        class_scores(probs, x.to(dtype))
    logs = _probability_twin(net, "log-probabilities")
    torch.testing.assert_close(class_scores(logs, x).value, class_scores(net, x).value)


def _bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "batches" in k}


def test_train_mode_model_is_evaluated_in_eval_mode_and_left_unchanged(net, x):
    labels = torch.tensor([0, 1, 2, 3])
    win = WinPercentage(against=["Grad-CAM", "HiResCAM"])
    expected = {
        "AD": _call(AverageDrop(), net, x, labels, layer=net.conv),
        "win": _call(win, net, x, labels, layer=net.conv),
        "maps": cam_explain(net, x.numpy(), labels.numpy(), method="Grad-CAM", layer=net.conv),
        "driver": evaluate_methods(net, net.conv, x, labels=labels, progress=False).o,
    }
    trained = copy.deepcopy(net).train()
    trained.fc.eval()  # a submodule's own mode must be restored too
    before = _bn_state(trained)
    got = {
        "AD": _call(AverageDrop(), trained, x, labels, layer=trained.conv),
        "win": _call(win, trained, x, labels, layer=trained.conv),
        "maps": cam_explain(
            trained, x.numpy(), labels.numpy(), method="Grad-CAM", layer=trained.conv
        ),
        "driver": evaluate_methods(trained, trained.conv, x, labels=labels, progress=False).o,
    }
    after = _bn_state(trained)
    assert all(torch.equal(before[k], after[k]) for k in before), "BatchNorm statistics changed"
    assert trained.training and trained.bn.training and not trained.fc.training
    assert got["AD"] == pytest.approx(expected["AD"]) and got["win"] == expected["win"]
    np.testing.assert_array_equal(got["maps"], expected["maps"])
    for source, methods in expected["driver"].items():
        for name, o in methods.items():
            torch.testing.assert_close(got["driver"][source][name], o)


def test_quantus_evaluate_leaves_a_train_mode_model_unchanged(net, x):
    trained = copy.deepcopy(net).train()
    before = _bn_state(trained)
    quantus.evaluate(
        metrics={"AD": AverageDrop(), "RP": RelativePerformance(baseline="Grad-CAM")},
        xai_methods={"Grad-CAM++": cam_explain},
        model=trained,
        x_batch=x.numpy(),
        y_batch=np.array([0, 1, 2, 3]),
        explain_func_kwargs={"layer": trained.conv},
        agg_func=lambda scores: scores[0],
        verbose=False,
    )
    assert all(torch.equal(before[k], v) for k, v in _bn_state(trained).items())
    assert trained.training


def test_float64_inputs_work_everywhere(tiny):
    """Quantus' own fixtures give float64 arrays; the model is float32."""
    model, images, labels = tiny
    x64 = images.double().numpy()
    explain = {"method": "HiResCAM", "layer": model.layer}
    maps32 = cam_explain(model, images.numpy(), labels.numpy(), **explain)
    maps64 = cam_explain(model, x64, labels.numpy(), **explain)
    np.testing.assert_array_equal(maps64, maps32)
    for metric in (AverageDrop(), RelativePerformance(baseline="Grad-CAM")):
        assert _call(metric, model, x64, labels) == pytest.approx(
            _call(metric, model, images, labels), rel=1e-12
        )
    a64 = AverageDrop()(model, x64, labels.numpy(), maps32.astype(np.float64))
    assert a64 == pytest.approx(AverageDrop()(model, images.numpy(), labels.numpy(), maps32))
    driver64 = evaluate_methods(model, model.layer, images.double(), progress=False)
    driver32 = evaluate_methods(model, model.layer, images, progress=False)
    torch.testing.assert_close(driver64.y, driver32.y)
    table = quantus.evaluate(
        metrics={"AD": AverageDrop()},
        xai_methods={"Grad-CAM": cam_explain},
        model=model,
        x_batch=x64,
        y_batch=labels.numpy(),
        explain_func_kwargs={"layer": model.layer},
        agg_func=lambda scores: scores[0],
        verbose=False,
    )
    assert np.isfinite(table["Grad-CAM"]["AD"])


def test_uint8_images_are_taken_as_their_values(tiny):
    model, images, labels = tiny
    pixels = (images * 255).round().to(torch.uint8)
    maps = cam_explain(model, pixels.numpy(), labels.numpy(), method="Grad-CAM", layer=model.layer)
    expected = cam_explain(
        model, pixels.float().numpy(), labels.numpy(), method="Grad-CAM", layer=model.layer
    )
    np.testing.assert_array_equal(maps, expected)


@pytest.mark.parametrize("shape", [(4, 1, 8, 8), (4, 8, 8), (4, 1, 3, 5)])
def test_a_batch_of_any_resolution(tiny, shape):
    """The docs promise maps of any resolution: they are upsampled before Quantus checks them."""
    model, images, labels = tiny
    layer_maps = torch.rand(*shape, generator=torch.Generator().manual_seed(3))
    as_input = upsample_and_normalize(layer_maps.view(4, 1, *shape[-2:]), (16, 16)).numpy()
    for metric in (AverageDrop(), DeadZoneMass(unseen=bottom_rows(16, 16, 4))):
        got = metric(model, images.numpy(), labels.numpy(), layer_maps.numpy())
        assert got == pytest.approx(metric(model, images.numpy(), labels.numpy(), as_input))


def test_all_zero_a_batch_is_refused_by_quantus_but_one_zero_map_is_scored(tiny):
    """As the docs say: Quantus asserts on an all-zero a_batch before our code runs."""
    model, images, labels = tiny
    maps = np.random.default_rng(0).random((4, 1, 16, 16)).astype(np.float32)
    with pytest.raises(AssertionError, match="all equal to zero"):
        AverageDrop()(model, images.numpy(), labels.numpy(), np.zeros_like(maps))
    maps[2] = 0
    scores = AverageDrop(return_aggregate=False)(model, images.numpy(), labels.numpy(), maps)
    y = class_scores(model, images, labels)
    o = class_scores(model, torch.zeros_like(images[2:3]), labels[2:3])
    expected = 100 * max(0.0, float(y.value[2] - o.value[0])) / float(y.value[2])
    assert scores[2] == pytest.approx(expected, rel=1e-5)


def test_channel_last_inputs_with_channel_last_maps(tiny):
    """Quantus turns channel-last inputs channel-first but leaves a_batch as given."""
    model, images, labels = tiny
    maps = np.random.default_rng(1).random((4, 1, 16, 16)).astype(np.float32)
    expected = AverageDrop()(model, images.numpy(), labels.numpy(), maps)
    last = np.moveaxis(images.numpy(), 1, -1)
    assert AverageDrop()(model, last, labels.numpy(), np.moveaxis(maps, 1, -1)) == pytest.approx(
        expected
    )
    small = np.moveaxis(maps[:, :, ::4, ::4], 1, -1)  # (N, 4, 4, 1): any resolution here too
    assert np.isfinite(AverageDrop()(model, last, labels.numpy(), small)[0])


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ("nan", ValueError, "inputs contain NaN or inf"),
        ("empty", ValueError, "x_batch is empty"),
        ("float labels", TypeError, "integer class indices"),
        ("label out of range", ValueError, r"targets must lie in \[0, 5\)"),
    ],
)
def test_metric_inputs_named_in_our_terms(tiny, change, error, message):
    model, images, labels = tiny
    x, y = images.numpy().copy(), labels.numpy()
    maps = np.random.default_rng(2).random((4, 1, 16, 16)).astype(np.float32)
    if change == "nan":
        x[1, 0, 3, 3] = np.nan
    elif change == "empty":
        x, y, maps = x[:0], y[:0], maps[:0]
    elif change == "float labels":
        y = y.astype(np.float32)
    else:
        y = np.array([0, 1, 2, 99])
    with pytest.raises(error, match=message):
        AverageDrop()(model, x, y, maps)


def test_method_lists_given_as_one_string_in_the_metrics(tiny):
    model, images, _ = tiny
    with pytest.raises(TypeError, match="against must be a sequence"):
        WinPercentage(against="Grad-CAM")
    with pytest.raises(TypeError, match="not a single string"):
        evaluate_methods(model, model.layer, images, methods="Grad-CAM", progress=False)
    with pytest.raises(TypeError, match="not one string"):
        compute_cams(model, model.layer, images[:2], torch.tensor([0, 1]), "HiResCAM")


# --- 3. the application: images of every mode ------------------------------------------------
