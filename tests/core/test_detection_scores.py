"""DetectionScores: a detector's reference boxes as (N, B) scores, and maps on the images."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerGradCam as CaptumLayerGradCam
from tiny_detectors import tiny_faster_rcnn
from torch import Tensor, nn

from captum_camplus import LayerGradCam
from captum_camplus.maps import upsample_and_normalize
from captum_camplus.targets import DetectionScores

# Detections of the fake detector: fixed boxes and labels, scores computed from its features.
FAKE_BOXES = torch.tensor(
    [
        [0.0, 0.0, 10.0, 10.0],
        [2.0, 2.0, 12.0, 12.0],
        [20.0, 20.0, 30.0, 30.0],
        [0.0, 0.0, 10.0, 10.0],
        [5.0, 0.0, 15.0, 8.0],
    ]
)
FAKE_LABELS = torch.tensor([1, 1, 2, 2, 1])


class FakeDetector(nn.Module):
    """A conv backbone; detection k scores sigmoid(mean of feature channel k) (its own image)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.Tanh())

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        features = self.backbone(torch.stack(images))
        scores = torch.sigmoid(3 * features.mean(dim=(2, 3)))
        return [
            {"boxes": FAKE_BOXES.clone(), "scores": s, "labels": FAKE_LABELS.clone()}
            for s in scores
        ]


def _iou64(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _reference(detections, refs, labels, threshold=0.0) -> torch.Tensor:
    """The float64 matching rule: argmax of score x IoU over the same label, IoU > threshold."""
    out = torch.zeros(len(detections), len(refs[0]), dtype=torch.float64)
    for n, found in enumerate(detections):
        for b, (ref, label) in enumerate(zip(refs[n], labels[n], strict=True)):
            best, best_key = None, -1.0
            for d in range(found["scores"].shape[0]):
                if int(found["labels"][d]) != int(label):
                    continue
                iou = _iou64(ref, found["boxes"][d].double().tolist())
                key = float(found["scores"][d].detach().double()) * iou
                if iou > threshold and key > best_key:
                    best, best_key = d, key
            if best is not None:
                out[n, b] = float(found["scores"][best].detach().double())
    return out


REFS = torch.tensor(
    [
        [1.0, 1.0, 11.0, 11.0],  # label 1: overlaps detections 0, 1 and 4
        [0.0, 0.0, 10.0, 10.0],  # label 2: detection 3 only (2 does not overlap)
        [40.0, 40.0, 50.0, 50.0],  # label 1: no overlap, score 0
        [21.0, 21.0, 29.0, 29.0],  # label 2: detection 2
        [6.0, 0.0, 14.0, 9.0],  # label 1: 0, 1 and 4 compete
    ]
)
REF_LABELS = torch.tensor([1, 2, 1, 2, 1])


@pytest.mark.parametrize("threshold", [0.0, 0.3])
def test_matches_float64_reference(threshold: float) -> None:
    detector = FakeDetector().eval()
    images = torch.randn(3, 3, 16, 16)
    wrapper = DetectionScores(detector, REFS, REF_LABELS, iou_threshold=threshold)
    scores = wrapper(images)
    detections = detector(list(images))
    refs = [REFS.tolist()] * 3
    labels = [REF_LABELS.tolist()] * 3
    expected = _reference(detections, refs, labels, threshold)
    assert scores.shape == (3, 5)
    torch.testing.assert_close(scores.double(), expected, rtol=0, atol=0)
    assert (scores[:, 2] == 0).all()
    # the rule matters: the three label-1 detections are not all tied on score x IoU
    assert expected[:, 0].unique().numel() > 1


def test_per_image_boxes_and_labels() -> None:
    detector = FakeDetector().eval()
    images = torch.randn(2, 3, 16, 16)
    refs = torch.stack([REFS[:3], REFS[2:]])
    labels = torch.stack([REF_LABELS[:3], REF_LABELS[2:]])
    scores = DetectionScores(detector, refs, labels)(images)
    expected = _reference(detector(list(images)), refs.tolist(), labels.tolist())
    torch.testing.assert_close(scores.double(), expected, rtol=0, atol=0)


def test_gradient_flows_to_backbone_and_unmatched_is_differentiable_zero() -> None:
    detector = FakeDetector().eval()
    images = torch.randn(2, 3, 16, 16)
    scores = DetectionScores(detector, REFS, REF_LABELS)(images)
    weight = detector.backbone[0].weight
    (matched,) = torch.autograd.grad(scores[:, 0].sum(), weight, retain_graph=True)
    assert matched.abs().sum() > 0
    assert scores[:, 2].requires_grad
    (unmatched,) = torch.autograd.grad(scores[:, 2].sum(), weight)
    assert (unmatched == 0).all()


def test_no_detections_gives_differentiable_zeros() -> None:
    class Empty(FakeDetector):
        def forward(self, images):
            found = super().forward(images)
            return [{k: v[:0] for k, v in f.items()} for f in found]

    scores = DetectionScores(Empty().eval(), REFS, REF_LABELS)(torch.randn(2, 3, 8, 8))
    assert scores.shape == (2, 5) and (scores == 0).all() and scores.requires_grad


def test_training_mode_is_evaluated_in_eval_mode_and_restored() -> None:
    class ModeCheck(FakeDetector):
        def forward(self, images):
            assert not self.training and not self.backbone.training
            return super().forward(images)

    detector = ModeCheck().train()
    detector.backbone[1].eval()  # a submodule's own mode is restored too
    DetectionScores(detector, REFS, REF_LABELS)(torch.randn(1, 3, 8, 8))
    assert detector.training and detector.backbone[0].training and not detector.backbone[1].training


# ---- alignment: a real GeneralizedRCNNTransform resizes (x0.6) and pads (to multiples of 32)

H, W = 40, 60
REGION = (28, 40, 42, 60)  # user rows [28, 40), cols [42, 60): the bottom-right corner


class RegionDetector(nn.Module):
    """One box, the region; its score depends only on channel 0 of the features over it."""

    def __init__(self) -> None:
        super().__init__()
        tv = pytest.importorskip("torchvision.models.detection.transform")
        self.transform = tv.GeneralizedRCNNTransform(
            min_size=24, max_size=1000, image_mean=[0.0] * 3, image_std=[1.0] * 3
        )
        self.backbone = nn.Sequential(nn.Identity(), nn.AvgPool2d(2))  # stride 2 on the canvas

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        sizes = [tuple(i.shape[-2:]) for i in images]
        image_list, _ = self.transform(images)
        features = self.backbone(image_list.tensors)
        found = []
        for n, (h, w) in enumerate(image_list.image_sizes):
            y0, y1, x0, x1 = (
                v * s for v, s in zip(REGION, (h / H, h / H, w / W, w / W), strict=True)
            )
            region = features[
                n, 0, round(y0) // 2 : round(y1) // 2, round(x0) // 2 : round(x1) // 2
            ]
            box = torch.tensor([[x0, y0, x1, y1]])  # in the resized image's coordinates
            found.append(
                {
                    "boxes": box,
                    "scores": torch.sigmoid(region.mean())[None],
                    "labels": torch.ones(1, dtype=torch.int64),
                }
            )
        return self.transform.postprocess(found, image_list.image_sizes, sizes)


def _region_images() -> Tensor:
    images = torch.zeros(1, 3, H, W)
    images[:, 0, 31:37, 47:55] = 1.0  # the region's content, in channel 0
    images[:, 1, 5:15, 5:20] = 3.0  # brighter, outside the region, in a channel the score ignores
    return images


def test_alignment_map_peaks_in_region_at_original_size() -> None:
    detector = RegionDetector().eval()
    images = _region_images()
    ref = torch.tensor([[REGION[2], REGION[0], REGION[3], REGION[1]]], dtype=torch.float32)
    wrapper = DetectionScores(detector, ref, torch.tensor([1]))
    found = detector(list(images))[0]
    torch.testing.assert_close(found["boxes"], ref)  # postprocess maps boxes back to the user's
    image_list, _ = detector.transform(list(images))
    assert image_list.image_sizes == [(24, 36)] and image_list.tensors.shape[-2:] == (32, 64)

    layer_maps = LayerGradCam(wrapper, detector.backbone[1]).attribute(images, target=0)
    assert layer_maps.shape == (1, 1, 16, 32)
    maps = wrapper.image_maps(layer_maps, images)
    assert maps.shape == (1, 1, H, W)
    row, col = divmod(int(maps.flatten().argmax()), W)
    assert REGION[0] <= row < REGION[1] and REGION[2] <= col < REGION[3], (row, col)

    # by construction, forgetting the padding or the resize moves the peak out of the region
    no_padding = upsample_and_normalize(layer_maps, (H, W))
    canvas = torch.nn.functional.interpolate(layer_maps, size=(32, 64), mode="bilinear")
    no_resize = torch.nn.functional.pad(canvas[..., :24, :36], (0, W - 36, 0, H - 24))
    for wrong in (no_padding, no_resize):
        row, col = divmod(int(wrong.flatten().argmax()), W)
        assert not (REGION[0] <= row < REGION[1] and REGION[2] <= col < REGION[3]), (row, col)


# ---- a real torchvision detector


@pytest.fixture(scope="module")
def faster_rcnn() -> nn.Module:
    return tiny_faster_rcnn()


def test_torchvision_detector(faster_rcnn: nn.Module) -> None:
    images = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        detections = faster_rcnn(list(images))
    # reference boxes: each image's best detection of each label
    refs, labels, expected = [], [], []
    for found in detections:
        picks = [int((found["scores"] * (found["labels"] == c)).argmax()) for c in (1, 2)]
        refs.append(found["boxes"][picks])
        labels.append(found["labels"][picks])
        expected.append(found["scores"][picks])
    assert all((lab == torch.tensor([1, 2])).all() for lab in labels)
    wrapper = DetectionScores(faster_rcnn, torch.stack(refs), torch.stack(labels))
    scores = wrapper(images)
    torch.testing.assert_close(scores, torch.stack(expected), rtol=0, atol=0)

    layer = faster_rcnn.backbone.body["13"]
    (grad,) = torch.autograd.grad(scores[:, 0].sum(), next(layer.parameters()))
    assert grad.abs().sum() > 0
    ours = LayerGradCam(wrapper, layer).attribute(images, target=1)
    captum = CaptumLayerGradCam(wrapper, layer).attribute(images, target=1).detach()
    assert torch.isfinite(ours).all() and ours.abs().sum() > 0
    # measured: 4.9e-7 of the largest magnitude (float32 sums in another order)
    torch.testing.assert_close(ours, captum, rtol=1e-6, atol=1e-6 * float(captum.abs().max()))
    maps = wrapper.image_maps(ours, images)
    assert maps.shape == (2, 1, 96, 128) and torch.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1


# ---- bad inputs


@pytest.mark.parametrize(
    ("boxes", "labels", "match"),
    [
        (torch.zeros(4), torch.tensor([1]), r"boxes must be \(B, 4\) or \(N, B, 4\)"),
        (torch.zeros(2, 5), torch.tensor([1, 1]), r"boxes must be \(B, 4\)"),
        (torch.zeros(1, 2, 3, 4), torch.tensor([1, 1]), r"boxes must be \(B, 4\)"),
        (torch.tensor([[5.0, 0, 1, 1]]), torch.tensor([1]), "x1 <= x2"),
        (torch.tensor([[0.0, 0, float("nan"), 1]]), torch.tensor([1]), "NaN or inf"),
        (torch.zeros(2, 4), torch.tensor([1, 1, 1]), r"labels must be \(B,\) or \(N, B\)"),
        (torch.zeros(2, 4), torch.ones(3, 2, dtype=torch.int64), r"labels must be \(B,\)"),
        (torch.zeros(3, 2, 4), torch.ones(2, 2, dtype=torch.int64), r"labels must be \(B,\)"),
        (torch.zeros(2, 4), torch.tensor([1.0, 2.0]), "labels must be integers"),
        (torch.zeros(2, 4), torch.tensor([1, -1]), "labels must be non-negative"),
    ],
)
def test_bad_boxes_and_labels(boxes, labels, match) -> None:
    with pytest.raises(ValueError, match=match):
        DetectionScores(FakeDetector(), boxes, labels)


def test_labels_out_of_the_detectors_range(faster_rcnn: nn.Module) -> None:
    with pytest.raises(ValueError, match="below the detector's 3 classes, got 3"):
        DetectionScores(faster_rcnn, torch.zeros(1, 4), torch.tensor([3]))
    with pytest.raises(ValueError, match="background"):
        DetectionScores(faster_rcnn, torch.zeros(1, 4), torch.tensor([0]))


def test_batch_mismatch() -> None:
    wrapper = DetectionScores(
        FakeDetector(), torch.zeros(2, 1, 4), torch.ones(2, 1, dtype=torch.int64)
    )
    with pytest.raises(ValueError, match="for 2 images .* but the batch has 3 images"):
        wrapper(torch.randn(3, 3, 8, 8))


@pytest.mark.parametrize(
    ("output", "match"),
    [
        (lambda images: torch.zeros(len(images), 3), "returned a Tensor"),
        (lambda images: [{"boxes": torch.zeros(0, 4)}] * len(images), r"keys \['boxes'\]"),
        (lambda images: [torch.zeros(1)] * len(images), "returned a Tensor"),
        (lambda images: [], "returned a list of length 0"),
        (
            lambda images: (
                [{"boxes": torch.zeros(2, 4), "scores": torch.zeros(3), "labels": torch.zeros(2)}]
                * len(images)
            ),
            r"must be \(D, 4\), \(D,\) and \(D,\)",
        ),
    ],
)
def test_detector_output_not_detections(output, match) -> None:
    class Odd(nn.Module):
        def forward(self, images):
            return output(images)

    with pytest.raises(ValueError, match=match):
        DetectionScores(Odd(), REFS, REF_LABELS)(torch.randn(2, 3, 8, 8))


def test_image_maps_errors() -> None:
    wrapper = DetectionScores(FakeDetector(), REFS, REF_LABELS)
    images = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="needs the detector's `transform`"):
        wrapper.image_maps(torch.rand(2, 1, 4, 4), images)
    with pytest.raises(ValueError, match="3 maps for 2 images"):
        wrapper.image_maps(torch.rand(3, 1, 4, 4), images)
    with pytest.raises(ValueError, match="without spatial dimensions"):
        wrapper.image_maps(torch.rand(2, 5), images)
