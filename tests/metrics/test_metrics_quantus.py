"""The Quantus metrics: equal to the core path, inside quantus.evaluate, registered once."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import quantus
import torch
from metrics_models import tiny_setup
from quantus.helpers import constants

import captum_camplus
import metrics
from captum_camplus.masking import bottom_rows
from metrics import (
    AverageDrop,
    DeadZoneMass,
    DeletionAUC,
    IncreaseInConfidence,
    RelativePerformance,
    RoadMostRelevantFirst,
    WinPercentage,
    cam_explain,
    evaluate_methods,
    functional,
)

METHODS = list(captum_camplus.DEFAULT_METHODS)  # the default of the driver
UNSEEN = bottom_rows(16, 16, 4)


@pytest.fixture(scope="module")
def setup():
    model, images, labels = tiny_setup(n=6, dead_rows=2)
    core = evaluate_methods(
        model,
        model.layer,
        images,
        labels=labels,
        maps_from=["pre-softmax"],
        unseen=UNSEEN,
        progress=False,
    )
    return model, images, labels, core


def call(metric, setup, method: str, **kwargs):
    model, images, labels, _ = setup
    return metric(
        model=model,
        x_batch=images.numpy(),
        y_batch=labels.numpy(),
        explain_func=cam_explain,
        explain_func_kwargs={"method": method, "layer": model.layer},
        batch_size=4,  # two Quantus batches
        **kwargs,
    )


def core_row(core, method: str) -> dict:
    return next(r for r in core.summary() if r["method"] == method)


@pytest.mark.parametrize("method", METHODS)
def test_quantus_path_equals_core_path(setup, method: str) -> None:
    core = setup[3]
    row = core_row(core, method)
    assert call(AverageDrop(), setup, method)[0] == pytest.approx(row["average drop"], rel=1e-6)
    assert call(IncreaseInConfidence(), setup, method)[0] == pytest.approx(
        row["increase in confidence"]
    )
    assert call(WinPercentage(against=METHODS), setup, method)[0] == pytest.approx(
        row["win percentage"], rel=1e-6
    )
    assert call(DeadZoneMass(unseen=UNSEEN), setup, method)[0] == pytest.approx(
        row["dead zone mass"], rel=1e-5
    )
    rp = call(RelativePerformance(baseline="Grad-CAM"), setup, method)[0]
    expected = math.exp(
        (core.log_o["pre-softmax"][method] - core.log_o["pre-softmax"]["Grad-CAM"]).mean()
    )
    assert rp == pytest.approx(expected, rel=1e-6)


def test_per_image_scores_equal_the_formulas(setup) -> None:
    core = setup[3]
    o = core.o["pre-softmax"]
    drops = call(AverageDrop(return_aggregate=False), setup, "Grad-CAM+")
    np.testing.assert_allclose(
        drops, functional.average_drop(core.y, o["Grad-CAM+"], "none"), rtol=1e-6
    )
    logs = call(RelativePerformance("Grad-CAM", return_aggregate=False), setup, "HiResCAM")
    ratio = functional.relative_performance(
        core.log_o["pre-softmax"]["HiResCAM"], core.log_o["pre-softmax"]["Grad-CAM"]
    )
    np.testing.assert_allclose(logs, ratio.log_ratio, rtol=1e-6, atol=1e-9)
    std = call(RelativePerformance("Grad-CAM", aggregate_func=np.std), setup, "HiResCAM")[0]
    assert std == pytest.approx(ratio.log_std.item(), rel=1e-5)


def test_precomputed_a_batch_and_explain_function_rivals(setup) -> None:
    model, images, labels, core = setup
    a_batch = cam_explain(
        model, images.numpy(), labels.numpy(), method="HiResCAM", layer=model.layer
    )

    def grad_cam(model, inputs, targets, **kwargs):
        return cam_explain(model, inputs, targets, method="Grad-CAM", layer=model.layer)

    rp = RelativePerformance(baseline=grad_cam)
    got = rp(model=model, x_batch=images.numpy(), y_batch=labels.numpy(), a_batch=a_batch)[0]
    expected = core.relative_performance()
    row = next(r for r in expected if r["methods"] == "HiResCAM vs Grad-CAM")
    assert got == pytest.approx(row["relative performance"], rel=1e-6)
    region = np.broadcast_to(UNSEEN.numpy(), (6, 1, 16, 16)).astype(np.float32)
    dz = DeadZoneMass()(
        model=model, x_batch=images.numpy(), y_batch=labels.numpy(), a_batch=a_batch, s_batch=region
    )
    assert dz[0] == pytest.approx(core_row(core, "HiResCAM")["dead zone mass"], rel=1e-5)


def test_raw_outputs_and_threshold(setup) -> None:
    model, images, labels, _ = setup
    raw = evaluate_methods(
        model,
        model.layer,
        images,
        ["Grad-CAM"],
        labels=labels,
        maps_from=["pre-softmax"],
        scores="raw",
        progress=False,
    )
    got = call(IncreaseInConfidence(scores="raw"), setup, "Grad-CAM")[0]
    assert got == pytest.approx(
        functional.increase_in_confidence(raw.y, raw.o["pre-softmax"]["Grad-CAM"]).item()
    )
    y = raw.y  # keep the images whose logit is above its median
    threshold = float(y.median())
    thresholded = evaluate_methods(
        model,
        model.layer,
        images,
        ["Grad-CAM", "HiResCAM"],
        labels=labels,
        maps_from=["pre-softmax"],
        scores="raw",
        threshold=threshold,
        progress=False,
    )
    per_image = call(
        IncreaseInConfidence(threshold=threshold, return_aggregate=False, scores="raw"),
        setup,
        "Grad-CAM",
    )
    assert np.isnan(per_image).tolist() == (y <= threshold).tolist()
    win = call(WinPercentage(METHODS[::3], threshold=threshold, scores="raw"), setup, "Grad-CAM")[0]
    assert win == pytest.approx(core_row(thresholded, "Grad-CAM")["win percentage"])


def test_errors_name_the_problem(setup) -> None:
    model, images, labels, _ = setup
    with pytest.raises(ValueError, match="no image has a score Y above the threshold"):
        call(AverageDrop(threshold=1.0), setup, "Grad-CAM")
    with pytest.raises(ValueError, match="needs the unseen region"):
        call(DeadZoneMass(), setup, "Grad-CAM")
    with pytest.raises(ValueError, match="at least one other method"):
        call(WinPercentage(against=["Grad-CAM"]), setup, "Grad-CAM")
    with pytest.raises(TypeError, match="sequence of method names"):
        WinPercentage(against="Grad-CAM")
    a_batch = cam_explain(
        model, images.numpy(), labels.numpy(), method="Grad-CAM", layer=model.layer
    )
    with pytest.raises(ValueError, match="needs explain_func"):
        RelativePerformance("HiResCAM")(
            model=model, x_batch=images.numpy(), y_batch=labels.numpy(), a_batch=a_batch
        )
    with pytest.raises(ValueError, match="NaN"):
        AverageDrop()(
            model=model,
            x_batch=images.numpy(),
            y_batch=labels.numpy(),
            a_batch=np.where(a_batch > 0.5, np.nan, a_batch),
        )


def test_preprocess_option(setup) -> None:
    model, images, labels, _ = setup
    normalise = lambda x: (x - 0.5) / 0.5  # noqa: E731
    core = evaluate_methods(
        model,
        model.layer,
        images,
        ["Grad-CAM"],
        labels=labels,
        maps_from=["pre-softmax"],
        preprocess=normalise,
        progress=False,
    )
    got = AverageDrop(preprocess=normalise)(
        model=model,
        x_batch=images.numpy(),
        y_batch=labels.numpy(),
        explain_func=cam_explain,
        explain_func_kwargs={"method": "Grad-CAM", "layer": model.layer, "preprocess": normalise},
    )[0]
    assert got == pytest.approx(core_row(core, "Grad-CAM")["average drop"], rel=1e-6)
    assert got != pytest.approx(call(AverageDrop(), setup, "Grad-CAM")[0], rel=1e-3)


def test_batch_of_one(setup) -> None:
    model, images, labels, core = setup
    for metric in (AverageDrop(), WinPercentage(METHODS), RelativePerformance("Grad-CAM")):
        got = metric(
            model=model,
            x_batch=images[:1].numpy(),
            y_batch=labels[:1].numpy(),
            explain_func=cam_explain,
            explain_func_kwargs={"method": "Grad-CAM++", "layer": model.layer},
        )
        assert len(got) == 1 and np.isfinite(got[0])


def test_quantus_evaluate_with_our_metrics_and_methods(setup) -> None:
    model, images, labels, core = setup
    table = quantus.evaluate(
        metrics={
            "Average Drop": AverageDrop(),
            "Increase in Confidence": IncreaseInConfidence(),
            "Win Percentage": WinPercentage(against=METHODS),
            "Relative Performance": RelativePerformance(baseline="Grad-CAM"),
            "Dead Zone Mass": DeadZoneMass(unseen=UNSEEN),
        },
        xai_methods={method: cam_explain for method in METHODS},
        model=model,
        x_batch=images.numpy(),
        y_batch=labels.numpy(),
        explain_func_kwargs={"layer": model.layer},
        agg_func=lambda scores: scores[0],
    )
    relative = {r["methods"]: r["relative performance"] for r in core.relative_performance()}
    for method in METHODS:
        row = core_row(core, method)
        got = table[method]
        assert got["Average Drop"] == pytest.approx(row["average drop"], rel=1e-6)
        assert got["Increase in Confidence"] == pytest.approx(row["increase in confidence"])
        assert got["Win Percentage"] == pytest.approx(row["win percentage"], rel=1e-6)
        assert got["Dead Zone Mass"] == pytest.approx(row["dead zone mass"], rel=1e-5)
        expected = 1.0 if method == "Grad-CAM" else relative[f"{method} vs Grad-CAM"]
        assert got["Relative Performance"] == pytest.approx(expected, rel=1e-6)
    assert sum(table[m]["Win Percentage"] for m in METHODS) == pytest.approx(100.0)


def test_registration_is_in_place_idempotent_and_polite() -> None:
    registry = constants.AVAILABLE_METRICS
    faithfulness = registry["Faithfulness"]
    names = [
        "Average Drop",
        "Increase in Confidence",
        "Win Percentage",
        "Relative Performance",
        "Dead Zone Mass",
        "Deletion AUC",
        "Insertion AUC",
        "ROAD Most Relevant First",
        "ROAD Least Relevant First",
    ]
    listed = quantus.available_metrics()["Faithfulness"]
    assert all(listed.count(name) == 1 for name in names)
    assert metrics.register_quantus_metrics(metrics.QUANTUS_METRICS) == names
    assert constants.AVAILABLE_METRICS is registry and registry["Faithfulness"] is faithfulness
    assert quantus.available_metrics()["Faithfulness"] == listed
    assert faithfulness["Win Percentage"] is WinPercentage
    with pytest.warns(UserWarning, match="already lists 'Pixel-Flipping'"):
        assert metrics.register_quantus_metrics({"Pixel-Flipping": AverageDrop}) == []
    assert faithfulness["Pixel-Flipping"] is quantus.PixelFlipping
    # this package's class reloaded (same module and name) replaces the old one
    reloaded = type("AverageDrop", (AverageDrop,), {"__module__": AverageDrop.__module__})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            metrics.register_quantus_metrics({"Average Drop": reloaded})
        assert faithfulness["Average Drop"] is reloaded
    finally:
        metrics.register_quantus_metrics({"Average Drop": AverageDrop})
    assert faithfulness["Average Drop"] is AverageDrop


def test_metric_attributes() -> None:
    lower = {AverageDrop, DeadZoneMass, DeletionAUC, RoadMostRelevantFirst}
    for name, cls in metrics.QUANTUS_METRICS.items():
        assert cls.name == name
        assert cls.evaluation_category == quantus.helpers.enums.EvaluationCategory.FAITHFULNESS
        direction = "lower" if cls in lower else "higher"
        assert cls.score_direction.value == direction
    assert torch.is_tensor(UNSEEN)


class _Scaled(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, default: float) -> None:
        super().__init__()
        self.model, self.default = model, default

    def forward(self, x: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        return self.model(x) * (self.default if scale is None else scale)


def test_model_predict_kwargs_reach_the_model(setup) -> None:
    model, images, labels, _ = setup
    a_batch = cam_explain(
        model, images.numpy(), labels.numpy(), method="Grad-CAM", layer=model.layer
    )
    data = {"x_batch": images.numpy(), "y_batch": labels.numpy(), "a_batch": a_batch}
    with_kwargs = AverageDrop()(
        model=_Scaled(model, 1.0), model_predict_kwargs={"scale": 3.0}, **data
    )
    built_in = AverageDrop()(model=_Scaled(model, 3.0), **data)
    plain = AverageDrop()(model=model, **data)
    assert with_kwargs[0] == pytest.approx(built_in[0], rel=1e-12)
    assert with_kwargs[0] != pytest.approx(plain[0], rel=1e-3)


def test_quantus_softmax_flag_states_the_scores_and_never_changes_the_metric(setup) -> None:
    """``scores=`` is the metric's one setting; Quantus' ``softmax`` must agree with it."""
    softmax, raw = AverageDrop(), AverageDrop(scores="sigmoid")
    expected = {
        "softmax": call(softmax, setup, "Grad-CAM")[0],
        "raw": call(raw, setup, "Grad-CAM"),
    }
    assert expected["raw"][0] != pytest.approx(expected["softmax"], rel=1e-3)
    assert call(softmax, setup, "Grad-CAM", softmax=True)[0] == expected["softmax"]
    assert call(raw, setup, "Grad-CAM", softmax=False) == expected["raw"]
    with pytest.raises(ValueError, match="scores 'softmax' but was called with softmax=False"):
        call(softmax, setup, "Grad-CAM", softmax=False)
    with pytest.raises(ValueError, match="build it with scores='softmax'"):
        call(raw, setup, "Grad-CAM", softmax=True)
    assert (softmax.scores, raw.scores) == (None, "sigmoid")  # no call rewrote them
    assert call(softmax, setup, "Grad-CAM")[0] == expected["softmax"]
    with pytest.raises(TypeError, match="not a kind of score"):
        AverageDrop(scores=False)  # type: ignore[arg-type]


def test_quantus_evaluate_passes_its_softmax_call_keyword(setup) -> None:
    model, images, labels, _ = setup

    def run(metric: AverageDrop, softmax: bool) -> float:
        table = quantus.evaluate(
            metrics={"AD": metric},
            xai_methods={"Grad-CAM": cam_explain},
            model=model,
            x_batch=images.numpy(),
            y_batch=labels.numpy(),
            explain_func_kwargs={"layer": model.layer},
            call_kwargs={"stated": {"softmax": softmax}},
            agg_func=lambda scores: scores[0],
            verbose=False,
        )
        return table["Grad-CAM"]["AD"]

    assert run(AverageDrop(scores="sigmoid"), softmax=False) == pytest.approx(
        call(AverageDrop(scores="sigmoid"), setup, "Grad-CAM")[0], rel=1e-12
    )
    assert run(AverageDrop(), softmax=True) == pytest.approx(
        call(AverageDrop(), setup, "Grad-CAM")[0], rel=1e-12
    )
