"""Binary (N, 1) and multi-label models: never a softmax of one logit; sigmoid scores per label.

A binary classifier's softmax is 1 for every image, so every Y and O would be 1 and every
metric constant: the metrics refuse it with an error naming the choice, and ``scores="sigmoid"``
scores each label's sigmoid probability (float64, from ``logsigmoid``), checked here against
numbers computed by hand from the logits.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metrics_models import TinyNet

from metrics import (
    AverageDrop,
    IncreaseInConfidence,
    cam_explain,
    class_scores,
    evaluate_methods,
    functional,
)
from metrics.confidence import explanation_maps, score_kind


@pytest.fixture(scope="module")
def binary():
    model = TinyNet(classes=1, seed=3).eval()
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    return model, images


@pytest.fixture(scope="module")
def multi_label():
    model = TinyNet(classes=4, seed=5).eval()
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    labels = torch.tensor([0, 3, 1, 2, 3, 0])  # one label explained per image
    return model, images, labels


def _sigmoid64(z: torch.Tensor) -> np.ndarray:
    z = z.detach().double().numpy()
    return 1.0 / (1.0 + np.exp(-z))


def test_a_softmax_of_one_logit_is_refused_naming_the_choice(binary):
    model, images = binary
    with pytest.raises(ValueError, match="binary classifier.*scores='sigmoid'.*scores='raw'"):
        class_scores(model, images, 0)


def test_sigmoid_and_raw_scores_of_a_binary_model_match_the_logit(binary):
    model, images = binary
    with torch.no_grad():
        logits = model(images)[:, 0]
    sig = class_scores(model, images, 0, scores="sigmoid")
    np.testing.assert_allclose(sig.value.numpy(), _sigmoid64(logits), rtol=1e-12)
    np.testing.assert_allclose(sig.log.numpy(), np.log(_sigmoid64(logits)), rtol=1e-12)
    raw = class_scores(model, images, 0, scores="raw")
    np.testing.assert_allclose(raw.value.numpy(), logits.double().numpy(), rtol=0)
    with pytest.raises(ValueError, match="targets must be class indices in \\[0, 1\\)|\\[0, 1\\)"):
        class_scores(model, images, 1, scores="sigmoid")


def test_multi_label_scores_each_label_on_its_own(multi_label):
    model, images, labels = multi_label
    with torch.no_grad():
        logits = model(images)
    got = class_scores(model, images, labels, scores="sigmoid").value.numpy()
    expected = _sigmoid64(logits[torch.arange(6), labels])
    np.testing.assert_allclose(got, expected, rtol=1e-12)

    def shifted(x):  # other labels' logits change, the explained ones do not
        out = model(x)
        return out + 5.0 * (torch.arange(4) != labels[:, None]).to(out.dtype)

    np.testing.assert_allclose(class_scores(shifted, images, labels, "sigmoid").value, got)


def test_score_kind_takes_a_kind_of_score_and_no_flag():
    assert score_kind() == "softmax"
    assert score_kind("sigmoid") == "sigmoid"
    for flag in (True, False):  # the older softmax= flag is not a kind of score
        with pytest.raises(TypeError, match="not a kind of score: pass scores='softmax'"):
            score_kind(flag)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scores must be one of"):
        score_kind("probit")  # type: ignore[arg-type]


def test_cam_explain_of_a_binary_model(binary):
    model, images = binary
    targets = np.zeros(6, dtype=int)
    pre = cam_explain(model, images.numpy(), targets, method="Grad-CAM", layer=model.layer)
    assert pre.shape == (6, 1, 16, 16) and np.isfinite(pre).all()
    with pytest.raises(ValueError, match="post-softmax maps of a model with one output"):
        cam_explain(
            model,
            images.numpy(),
            targets,
            method="Grad-CAM",
            layer=model.layer,
            maps_from="post-softmax",
        )
    # the sigmoid's gradient is the logit's times sigmoid'(z) > 0 per image: the same
    # normalised Grad-CAM maps
    post = cam_explain(
        model,
        images.numpy(),
        targets,
        method="Grad-CAM",
        layer=model.layer,
        maps_from="post-softmax",
        scores="sigmoid",
    )
    np.testing.assert_allclose(post, pre, atol=1e-5)


def _quantus(metric, model, images, targets, **kwargs):
    return metric(
        model=model,
        x_batch=images.numpy(),
        y_batch=np.asarray(targets),
        explain_func=cam_explain,
        explain_func_kwargs={"method": "Grad-CAM++", "layer": model.layer},
        **kwargs,
    )


def test_quantus_metrics_refuse_a_binary_softmax_and_score_sigmoids(binary):
    model, images = binary
    targets = np.zeros(6, dtype=int)
    with pytest.raises(ValueError, match="binary classifier"):
        _quantus(AverageDrop(), model, images, targets)
    metric = AverageDrop(return_aggregate=False, scores="sigmoid")
    drops = _quantus(metric, model, images, targets)
    # Quantus' softmax=False agrees with sigmoid scores (no softmax); softmax=True does not
    assert _quantus(metric, model, images, targets, softmax=False) == drops
    with pytest.raises(ValueError, match="scores 'sigmoid' but was called with softmax=True"):
        _quantus(metric, model, images, targets, softmax=True)
    maps = torch.as_tensor(
        cam_explain(model, images.numpy(), targets, method="Grad-CAM++", layer=model.layer)
    )
    with torch.no_grad():
        y = torch.sigmoid(model(images).double())[:, 0]
        o = torch.sigmoid(model(explanation_maps(maps, images)).double())[:, 0]
    np.testing.assert_allclose(drops, functional.average_drop(y, o, "none"), rtol=1e-6)
    assert len(set(np.round(drops, 6))) > 1  # not the constant of a softmax of one logit


def test_quantus_metrics_score_a_multi_label_model_per_label(multi_label):
    model, images, labels = multi_label
    got = _quantus(
        IncreaseInConfidence(return_aggregate=False, scores="sigmoid"), model, images, labels
    )
    maps = torch.as_tensor(
        cam_explain(model, images.numpy(), labels.numpy(), method="Grad-CAM++", layer=model.layer)
    )
    with torch.no_grad():
        y = torch.sigmoid(model(images).double())[torch.arange(6), labels]
        o = torch.sigmoid(model(explanation_maps(maps, images)).double())[torch.arange(6), labels]
    np.testing.assert_allclose(got, functional.increase_in_confidence(y, o, "none"), rtol=1e-6)


def test_evaluate_methods_refuses_a_binary_softmax_and_scores_sigmoids(binary):
    model, images = binary
    labels = torch.zeros(6, dtype=torch.long)
    with pytest.raises(ValueError, match="binary classifier.*scores='sigmoid'"):
        evaluate_methods(model, model.layer, images, labels=labels, progress=False)
    with pytest.raises(ValueError, match="post-softmax maps of a model with one output"):
        evaluate_methods(model, model.layer, images, labels=labels, scores="raw", progress=False)
    result = evaluate_methods(
        model,
        model.layer,
        images,
        ["Grad-CAM", "HiResCAM"],
        labels=labels,
        scores="sigmoid",
        progress=False,
    )
    assert result.scores == "sigmoid" and "sigmoid probabilities" in result.format()
    with torch.no_grad():
        y = torch.sigmoid(model(images).double())[:, 0]
    np.testing.assert_allclose(result.y.numpy(), y.numpy(), rtol=1e-12)
    maps = cam_explain(model, images.numpy(), 0, method="HiResCAM", layer=model.layer)
    with torch.no_grad():
        o = torch.sigmoid(model(explanation_maps(torch.as_tensor(maps), images)).double())[:, 0]
    np.testing.assert_allclose(result.o["pre-softmax"]["HiResCAM"].numpy(), o.numpy(), rtol=1e-6)
    # not the constant Y = O = 1 of a softmax of one logit (compared per image, not between
    # methods, which may tie on random weights)
    assert bool((result.o["pre-softmax"]["HiResCAM"] != result.y).all())


def test_evaluate_methods_explains_and_scores_a_multi_label_model_per_label(multi_label):
    model, images, labels = multi_label
    result = evaluate_methods(
        model,
        model.layer,
        images,
        ["Grad-CAM++"],
        labels=labels,
        maps_from=["pre-softmax"],
        scores="sigmoid",
        progress=False,
    )
    with torch.no_grad():
        y = torch.sigmoid(model(images).double())[torch.arange(6), labels]
    np.testing.assert_allclose(result.y.numpy(), y.numpy(), rtol=1e-12)
    assert result.target.tolist() == labels.tolist()
