"""The metrics on wrapped models (``captum_camplus.targets``): a segmentation model's region
probabilities, a detector's box scores and an encoder's cosine similarities, against an
independent float64 computation of each score and metric.

The reference's maps come from Captum through the same wrapper (``LayerGradCam`` for Grad-CAM,
``LayerGradientXActivation`` summed over channels for HiResCAM), its scores from numpy on the
inner model's float64 outputs, and the metrics from their definitions.

References:
- Chattopadhay, Sarkar, Howlader & Balasubramanian (2018), "Grad-CAM++: Generalized
  Gradient-based Visual Explanations for Deep Convolutional Networks", arXiv:1710.11063:
  average drop, increase in confidence, win %.
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838: relative performance (eq. 16-17).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from captum.attr import LayerGradCam as CaptumLayerGradCam
from captum.attr import LayerGradientXActivation
from tiny_detectors import tiny_faster_rcnn
from torch import Tensor, nn

from captum_camplus.targets import (
    DetectionScores,
    OutputSelect,
    SegmentationScores,
    SimilarityScores,
)
from metrics import BatchScorer, cam_explain, deletion_auc, evaluate_methods, insertion_auc
from metrics.confidence import STATED_SCORES, class_scores, model_score_kind, target_scores
from metrics.perturbation import gaussian_blur, perturbation_curve
from metrics.records import evaluation_result

SIZE = 12
CLASSES = 3
METHODS = ["Grad-CAM", "HiResCAM"]
BOXES = [[0.0, 0.0, 5.0, 5.0], [6.0, 0.0, 12.0, 6.0], [0.0, 7.0, 8.0, 12.0]]  # disjoint
BOX_LABELS = [1, 2, 1]


def _seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for parameter in module.parameters():
        nn.init.normal_(parameter, std=0.5)
    return module.double().eval()


class Segmenter(nn.Module):
    """(N, 3, 12, 12) -> (N, 3, 12, 12) logits; the CAM layer is at the input's resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.layer = nn.Conv2d(6, 8, 3, padding=1)
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(8, CLASSES, 1))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"out": self.head(self.layer(self.features(x)))}


class BoxDetector(nn.Module):
    """torchvision's detector interface: detection d scores sigmoid(2 mean of channel d of the
    features over its box + 1); its boxes and labels are fixed."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Tanh())

    def box_logits(self, images: Tensor) -> Tensor:
        features = self.backbone(images)
        means = [
            features[:, d, int(y0) : int(y1), int(x0) : int(x1)].mean(dim=(1, 2))
            for d, (x0, y0, x1, y1) in enumerate(BOXES)
        ]
        return 2 * torch.stack(means, dim=1) + 1

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        scores = torch.sigmoid(self.box_logits(torch.stack(images)))
        boxes, labels = torch.tensor(BOXES), torch.tensor(BOX_LABELS)
        return [{"boxes": boxes, "scores": s, "labels": labels} for s in scores]


class Encoder(nn.Module):
    """(N, 3, 12, 12) -> (N, 5) embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 5)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.layer(x)).mean(dim=(2, 3)))


# --- the scores in float64 numpy ----------------------------------------------------------------


def _segmentation64(model: Segmenter, x: Tensor, mask: np.ndarray | None) -> np.ndarray:
    with torch.no_grad():
        logits = model(x)["out"].double().numpy()
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    if mask is None:  # the pixels predicted as each class
        weights = (logits.argmax(axis=1)[:, None] == np.arange(CLASSES)[None, :, None, None]) * 1.0
    else:
        weights = np.broadcast_to(mask.astype(np.float64)[:, None], logits.shape)
    pixels = weights.sum(axis=(2, 3))
    total = (weights * probabilities).sum(axis=(2, 3))
    return np.where(pixels > 0, total / np.maximum(pixels, 1), 0.0)


def _detection64(detector: BoxDetector, x: Tensor) -> np.ndarray:
    """Each reference box is one of the detector's own, of its label and disjoint from the other
    of that label: its match is itself (IoU 1), and its score the detection's."""
    with torch.no_grad():
        logits = detector.box_logits(x).double().numpy()
    return 1 / (1 + np.exp(-logits))


def _cosine64(encoder: Encoder, references: Tensor, x: Tensor) -> np.ndarray:
    with torch.no_grad():
        embedding = encoder(x).double().numpy()
    refs = references.double().numpy()
    return (embedding @ refs.T) / (
        np.linalg.norm(embedding, axis=1)[:, None] * np.linalg.norm(refs, axis=1)[None, :]
    )


def _images(n: int = 6, seed: int = 1) -> Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)).double()


class Case:
    """A wrapped model, its CAM layer and its scores in float64 numpy."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name.startswith("segmentation"):
            model = _seeded(Segmenter())
            mask = None
            if name == "segmentation, mask":
                mask = np.zeros((SIZE, SIZE), dtype=bool)
                mask[2:9, 3:10] = True
            self.wrapped: nn.Module = SegmentationScores(
                model, None if mask is None else torch.as_tensor(mask)
            )
            self.layer: nn.Module = model.layer
            self.score64 = lambda x: _segmentation64(
                model, x, None if mask is None else np.broadcast_to(mask, (len(x), SIZE, SIZE))
            )
        elif name == "detection":
            detector = _seeded(BoxDetector())
            self.wrapped = DetectionScores(detector, torch.tensor(BOXES), torch.tensor(BOX_LABELS))
            self.layer = detector.backbone[0]
            self.score64 = lambda x: _detection64(detector, x)
        else:
            encoder = _seeded(Encoder())
            references = torch.randn(3, 5, generator=torch.Generator().manual_seed(3)).double()
            self.wrapped = SimilarityScores(encoder, references)
            self.layer = encoder.layer
            self.score64 = lambda x: _cosine64(encoder, references, x)

    def heatmaps(self, x: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Each method's ``L``: Captum's maps through the wrapper, min-max normalised in float64
        (the layer is at the input's resolution, so nothing is upsampled)."""
        grad_cam = CaptumLayerGradCam(self.wrapped, self.layer).attribute(
            x, target, relu_attributions=True
        )
        products = LayerGradientXActivation(self.wrapped, self.layer).attribute(x, target)
        maps = {"Grad-CAM": grad_cam, "HiResCAM": products.sum(dim=1, keepdim=True).relu()}
        heat = {}
        for name, cam in maps.items():
            assert cam.shape[-2:] == x.shape[-2:]
            flat = cam.detach().double().flatten(1)
            low, high = flat.min(1).values[:, None], flat.max(1).values[:, None]
            assert bool((high > low).all()), "a constant map: pick other data"
            heat[name] = ((flat - low) / (high - low)).view_as(cam)
        return heat

    def reference(self, x: Tensor, target: Tensor) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``Y`` and each method's ``O`` on ``E = L (.) I``, in float64."""
        rows = np.arange(len(x))
        y = self.score64(x)[rows, target.numpy()]
        o = {
            name: self.score64(heat * x)[rows, target.numpy()]
            for name, heat in self.heatmaps(x, target).items()
        }
        return y, o


PROBABILITY_CASES = ["segmentation, predicted", "segmentation, mask", "detection"]


def _targets(case: Case, x: Tensor) -> Tensor:
    """The class (box) of highest score on each image."""
    return torch.as_tensor(case.score64(x).argmax(axis=1))


def _average_drop(y: np.ndarray, o: np.ndarray) -> float:
    return float(np.mean(100 * np.maximum(0.0, y - o) / y))


def _win(o: dict[str, np.ndarray]) -> dict[str, float]:
    stacked = np.stack([o[m] for m in METHODS])
    best = stacked.max(axis=0)
    winners = (best - stacked <= 1e-4 * np.abs(best)).astype(np.float64)
    return dict(zip(METHODS, 100 * (winners / winners.sum(axis=0)).mean(axis=1), strict=True))


@pytest.mark.parametrize("name", PROBABILITY_CASES)
def test_evaluate_methods_on_probabilities_matches_float64(name: str) -> None:
    case, x = Case(name), _images()
    target = _targets(case, x)
    y, o = case.reference(x, target)
    result = evaluate_methods(case.wrapped, case.layer, x, METHODS, labels=target, progress=False)
    assert result.scores == "probabilities" and result.maps_from == ["pre-softmax"]
    assert "scores: probabilities" in result.heading()
    np.testing.assert_allclose(result.y.numpy(), y, rtol=1e-12)  # no softmax on top of them
    assert bool((result.y < 1).all()) and bool((result.y > 0).all())
    for method in METHODS:
        got = result.o["pre-softmax"][method].numpy()
        np.testing.assert_allclose(got, o[method], rtol=1e-9)
        np.testing.assert_allclose(result.log_o["pre-softmax"][method].numpy(), np.log(o[method]))
    rows = {row["method"]: row for row in result.summary()}
    wins = _win(o)
    for method in METHODS:
        row = rows[method]
        assert row["average drop"] == pytest.approx(_average_drop(y, o[method]), rel=1e-9)
        assert row["increase in confidence"] == pytest.approx(100 * np.mean(y < o[method]))
        assert row["win percentage"] == pytest.approx(wins[method], rel=1e-9)
    (relative,) = result.relative_performance()
    log_ratio = np.log(o["HiResCAM"] / o["Grad-CAM"])
    assert relative["methods"] == "HiResCAM vs Grad-CAM"
    assert relative["relative performance"] == pytest.approx(math.exp(log_ratio.mean()), rel=1e-9)
    assert relative["log std"] == pytest.approx(log_ratio.std(), rel=1e-7, abs=1e-12)


def test_similarities_leave_average_drop_and_relative_performance_undefined() -> None:
    case, x = Case("similarity"), _images()
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    y, o = case.reference(x, target)
    assert (y < 0).any(), "some cosine must be negative for the test to mean anything"
    result = evaluate_methods(case.wrapped, case.layer, x, METHODS, labels=target, progress=False)
    assert result.scores == "cosine" and "scores: cosine similarities" in result.heading()
    np.testing.assert_allclose(result.y.numpy(), y, rtol=1e-12)
    wins = _win(o)
    for row in result.summary():
        method = row["method"]
        np.testing.assert_allclose(result.o["pre-softmax"][method].numpy(), o[method], rtol=1e-9)
        assert math.isnan(row["average drop"])
        assert row["increase in confidence"] == pytest.approx(100 * np.mean(y < o[method]))
        assert row["win percentage"] == pytest.approx(wins[method], rel=1e-9)
    assert all(math.isnan(r["relative performance"]) for r in result.relative_performance())
    text = str(result)
    assert "average drop: n/a under cosine scores" in text
    assert "cosine similarities lie in [-1, 1]" in text


def test_scores_of_a_wrapper_are_those_it_states() -> None:
    stated = {
        SegmentationScores: "probabilities",
        DetectionScores: "probabilities",
        SimilarityScores: "cosine",
    }
    for cls, kind in stated.items():
        assert cls.scores_kind == kind and kind in STATED_SCORES
    assert not hasattr(OutputSelect, "scores_kind")  # the tensor it picks may be logits
    case = Case("segmentation, mask")
    scorer = BatchScorer(case.wrapped, case.layer, METHODS)
    assert (scorer.scores, scorer.maps_from) == ("probabilities", ["pre-softmax"])
    encoder = OutputSelect(_seeded(Encoder()), 0)
    assert model_score_kind(encoder) == "softmax"
    x = _images(2)
    direct = class_scores(case.wrapped, x, 1)  # the low-level call reads the stated kind too
    np.testing.assert_allclose(direct.value.numpy(), case.score64(x)[:, 1], rtol=1e-12)


@pytest.mark.parametrize("scores", ["softmax", "sigmoid", "raw", "cosine"])
def test_a_kind_the_wrapper_does_not_state_is_refused_up_front(scores: str) -> None:
    case = Case("segmentation, mask")
    with pytest.raises(ValueError, match="SegmentationScores returns probabilities") as error:
        evaluate_methods(case.wrapped, case.layer, _images(), scores=scores, progress=False)
    assert "leave scores out, or pass scores='probabilities'" in str(error.value)


def test_post_softmax_maps_of_scores_are_refused() -> None:
    case = Case("detection")
    with pytest.raises(ValueError, match="post-softmax maps .* no softmax goes on top"):
        BatchScorer(case.wrapped, case.layer, maps_from=["pre-softmax", "post-softmax"])
    with pytest.raises(ValueError, match="maps_from=\\('pre-softmax',\\)"):
        cam_explain(
            case.wrapped,
            _images(2),
            0,
            method="Grad-CAM",
            layer=case.layer,
            maps_from="post-softmax",
        )


class Overconfident(SegmentationScores):
    """States probabilities but returns their double, up to 2."""

    def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return 2 * super().forward(*args, **kwargs)


def test_stated_probabilities_outside_zero_one_are_refused() -> None:
    model = _seeded(Segmenter())
    wrapped = Overconfident(model, torch.ones(SIZE, SIZE, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"taken as probabilities .* lie in \[0, 1\]"):
        evaluate_methods(wrapped, model.layer, _images(), progress=False)


def test_cam_explain_through_a_wrapper_matches_captum() -> None:
    case, x = Case("detection"), _images(3)
    target = _targets(case, x)
    heat = case.heatmaps(x, target)
    for method in METHODS:
        maps = cam_explain(case.wrapped, x, target, method=method, layer=case.layer)
        np.testing.assert_allclose(maps, heat[method].numpy(), rtol=1e-5, atol=1e-6)


def test_an_o_of_zero_makes_its_pairs_relative_performance_not_available() -> None:
    """A box score the explanation map takes to 0 (the detection is lost): average drop is 100
    % there, and ``log(O'/O)`` of its method's pairs is infinite, so those are n/a."""
    y = [0.9, 0.8, 0.7]
    o = {"A": [0.5, 0.4, 0.6], "B": [0.6, 0.0, 0.65], "C": [0.7, 0.5, 0.3]}
    records = [
        {
            "position": i,
            "target": 0,
            "Y": y[i],
            "log Y": math.log(y[i]),
            "kept": True,
            "O": {"pre-softmax": {m: o[m][i] for m in o}},
            "log O": {"pre-softmax": {m: math.log(o[m][i]) if o[m][i] else -math.inf for m in o}},
        }
        for i in range(3)
    ]
    result = evaluation_result(records, list(o), ["pre-softmax"], scores="probabilities")
    rows = {row["method"]: row for row in result.summary()}
    expected = np.mean([100 * max(0.0, a - b) / a for a, b in zip(y, o["B"], strict=True)])
    assert rows["B"]["average drop"] == pytest.approx(expected, rel=1e-12)
    relative = {row["methods"]: row for row in result.relative_performance(intervals=True)}
    assert math.isnan(relative["B vs A"]["relative performance"])
    assert math.isnan(relative["C vs B"]["log mean ci low"])
    ratio = np.log(np.array(o["C"]) / np.array(o["A"]))
    assert relative["C vs A"]["relative performance"] == pytest.approx(math.exp(ratio.mean()))
    assert set(result.relative_performance_per_image()["pre-softmax"]) == {"C vs A"}
    text = str(result)
    assert "relative performance, log mean, log std of B vs A (pre-softmax): n/a" in text
    assert "B's O is 0 on 1 of 3 images" in text


# --- the Quantus metrics ------------------------------------------------------------------------


def _quantus_call(metric: Any, case: Case, x: Tensor, target: Tensor, method: str) -> float:
    (value,) = metric(
        model=case.wrapped,
        x_batch=x.numpy(),
        y_batch=target.numpy(),
        explain_func=cam_explain,
        explain_func_kwargs={"method": method, "layer": case.layer},
        batch_size=4,  # two Quantus batches
    )
    return float(value)


@pytest.mark.parametrize("name", PROBABILITY_CASES)
def test_quantus_metrics_on_probabilities_match_float64(name: str) -> None:
    quantus_metrics = pytest.importorskip("metrics.quantus_metrics")
    case, x = Case(name), _images()
    target = _targets(case, x)
    y, o = case.reference(x, target)
    drop = _quantus_call(quantus_metrics.AverageDrop(), case, x, target, "HiResCAM")
    assert drop == pytest.approx(_average_drop(y, o["HiResCAM"]), rel=1e-5)
    increase = _quantus_call(quantus_metrics.IncreaseInConfidence(), case, x, target, "HiResCAM")
    assert increase == pytest.approx(100 * np.mean(y < o["HiResCAM"]))
    win = _quantus_call(quantus_metrics.WinPercentage(METHODS), case, x, target, "HiResCAM")
    assert win == pytest.approx(_win(o)["HiResCAM"], rel=1e-5)
    relative = quantus_metrics.RelativePerformance("Grad-CAM")
    ratio = _quantus_call(relative, case, x, target, "HiResCAM")
    expected = math.exp(np.log(o["HiResCAM"] / o["Grad-CAM"]).mean())
    assert ratio == pytest.approx(expected, rel=1e-5)


class Counting(SimilarityScores):
    """Counts its forwards."""

    calls = 0

    def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        type(self).calls += 1
        return super().forward(*args, **kwargs)


def test_quantus_metrics_undefined_for_similarities_are_refused_before_any_forward() -> None:
    quantus_metrics = pytest.importorskip("metrics.quantus_metrics")
    case, x = Case("similarity"), _images()
    wrapped = Counting(case.wrapped.encoder, case.wrapped.references)
    case.wrapped = wrapped
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    for metric, name in [
        (quantus_metrics.AverageDrop(), "Average Drop"),
        (quantus_metrics.RelativePerformance("Grad-CAM"), "Relative Performance"),
    ]:
        with pytest.raises(ValueError, match=f"{name} is undefined for cosine similarities") as e:
            _quantus_call(metric, case, x, target, "HiResCAM")
        assert "can be zero or negative" in str(e.value)
    assert Counting.calls == 0
    with pytest.raises(ValueError, match="Average Drop is undefined for cosine similarities"):
        quantus_metrics.AverageDrop(scores="cosine")
    y, o = case.reference(x, target)
    increase = _quantus_call(quantus_metrics.IncreaseInConfidence(), case, x, target, "HiResCAM")
    assert increase == pytest.approx(100 * np.mean(y < o["HiResCAM"]))
    win = _quantus_call(quantus_metrics.WinPercentage(METHODS), case, x, target, "Grad-CAM")
    assert win == pytest.approx(_win(o)["Grad-CAM"], rel=1e-5)


def test_scores_taken_as_they_are_allow_rounding_and_refuse_the_rest() -> None:
    rounded = torch.tensor([[1 + 1e-7, 0.5]], dtype=torch.float32)  # a float32 mean of p <= 1
    assert float(target_scores(rounded, 0, "probabilities").value[0]) == pytest.approx(1.0)
    assert float(target_scores(rounded * -1, 1, "cosine").value[0]) == -0.5
    zero = target_scores(torch.tensor([[0.0, 1.0]]), 0, "probabilities")
    assert zero.value[0] == 0 and zero.log[0] == -math.inf  # relative performance says n/a
    with pytest.raises(ValueError, match=r"range over \[1\.01, 1\.01\]"):
        target_scores(torch.tensor([[1.01, 0.5]]), 0, "probabilities")
    with pytest.raises(ValueError, match=r"taken as cosine similarities"):
        target_scores(torch.tensor([[-1.01, 0.5]], dtype=torch.float64), 0, "cosine")
    with pytest.raises(ValueError, match=r"scores must be one of .*'probabilities', 'cosine'"):
        target_scores(rounded, 0, "similarity")  # type: ignore[arg-type]


def test_a_stated_kind_must_be_one_the_metrics_know() -> None:
    class Logits(nn.Module):
        scores_kind = "logits"

    with pytest.raises(ValueError, match=r"Logits.scores_kind is 'logits'; a model states one of"):
        model_score_kind(Logits())
    named = nn.Module()
    named.scores_kind = nn.Linear(1, 1)  # an instance's submodule of that name states nothing
    assert model_score_kind(named) == "softmax"


def test_evaluate_methods_on_a_torchvision_detector() -> None:
    """A real Faster R-CNN (random weights, small canvas): ``Y`` is the detector's own score of
    each reference box, ``O`` the wrapper's score on the explanation maps, nothing raises."""
    detector = tiny_faster_rcnn()
    images = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        (found,) = detector(list(images))
    wrapped = DetectionScores(detector, found["boxes"][:2], found["labels"][:2])  # its top two
    layer = detector.backbone.body["13"]
    target = torch.zeros(1, dtype=torch.long)
    result = evaluate_methods(wrapped, layer, images, METHODS, labels=target, progress=False)
    torch.testing.assert_close(result.y, found["scores"][:1].double(), rtol=0, atol=0)
    maps = cam_explain(wrapped, images, 0, method="HiResCAM", layer=layer)
    with torch.no_grad():
        o = wrapped(torch.as_tensor(maps) * images)[:, 0].double()
    torch.testing.assert_close(result.o["pre-softmax"]["HiResCAM"], o, rtol=1e-5, atol=1e-7)
    assert "scores: probabilities" in str(result)


def test_deletion_and_insertion_score_a_wrapper_as_it_states() -> None:
    """The perturbation metrics read the wrapper's stated kind: a region's mean probability is
    not put through a softmax again, and a softmax on top of it is refused."""
    model = _seeded(Segmenter())
    wrapped = SegmentationScores(model)
    x = _images(2).double()
    maps = torch.rand(2, 1, SIZE, SIZE, dtype=torch.float64)
    target = torch.tensor([1, 2])
    for insert, auc in ((False, deletion_auc), (True, insertion_auc)):
        stated = auc(wrapped, x, maps, target, steps=4)
        named = auc(wrapped, x, maps, target, steps=4, scores="probabilities")
        torch.testing.assert_close(stated, named, rtol=0, atol=0)
        with pytest.raises(ValueError, match="probabilities"):
            auc(wrapped, x, maps, target, steps=4, scores="softmax")
        curve, _ = perturbation_curve(wrapped, x, maps, target, steps=4, insert=insert)
        start = x if not insert else gaussian_blur(x)
        expected = _segmentation64(model, start, None)[[0, 1], [1, 2]]
        np.testing.assert_allclose(curve[:, 0].numpy(), expected, rtol=1e-12)
