"""Explanation maps, class scores and CAMs for the metrics, against float64 computations.

Papers (full references in the README): Taimeskhanov, Sicre & Garreau (2024), arXiv:2404.01964.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as tF
from metrics_models import tiny_setup

from captum_camplus import LayerGradCam, LayerHiResCam
from captum_camplus.masking import bottom_rows
from captum_camplus.modules import find_layer
from captum_camplus.utils import cpu_forward_rows
from metrics import cam_dead_zone_mass, cam_explain, class_scores, explanation_maps
from metrics.confidence import as_target, keep_mask, model_forward
from metrics.heatmaps import compute_cams


def minmax64(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.double().flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    return ((flat - low[:, None]) / (high - low)[:, None]).view_as(maps)


def test_explanation_maps_upsample_normalise_and_multiply() -> None:
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 1, 3, 3, generator=generator) * 5 - 1
    images = torch.rand(2, 3, 6, 6, generator=generator)
    up = tF.interpolate(maps.double(), size=(6, 6), mode="bilinear", align_corners=False)
    expected = minmax64(up) * images.double()
    torch.testing.assert_close(explanation_maps(maps, images).double(), expected)


def test_explanation_maps_zero_map_nan_map_and_bad_shapes() -> None:
    images = torch.rand(2, 3, 4, 4)
    assert explanation_maps(torch.zeros(2, 1, 2, 2), images).eq(0).all()
    with pytest.raises(ValueError, match="NaN"):
        explanation_maps(torch.full((2, 1, 2, 2), math.nan), images)
    with pytest.raises(ValueError, match="channels"):
        explanation_maps(torch.ones(2, 2, 4, 4), images)
    with pytest.raises(ValueError, match="one \\(N, 1, \\*spatial\\) map per image"):
        explanation_maps(torch.ones(3, 1, 4, 4), images)


def test_class_scores_softmax_and_raw_outputs() -> None:
    logits = torch.tensor([[1.0, 2.0, -1.0], [0.5, -3.0, 4.0]])
    target = [1, 0]
    scores = class_scores(lambda x: x, logits, target)
    for i, c in enumerate(target):
        row = [float(v) for v in logits[i]]
        p = math.exp(row[c]) / sum(math.exp(v) for v in row)
        assert scores.value[i].item() == pytest.approx(p, rel=1e-12)
        assert scores.log[i].item() == pytest.approx(math.log(p), rel=1e-12)
    assert scores.value.dtype == torch.float64 and scores.target.tolist() == target
    raw = class_scores(lambda x: x, logits, target, scores="raw")
    torch.testing.assert_close(raw.value, torch.tensor([2.0, 0.5], dtype=torch.float64))
    assert torch.isnan(class_scores(lambda x: x, logits, 2, scores="raw").log[0])
    assert class_scores(lambda x: x, logits).target.tolist() == [1, 2]  # predicted classes


def test_class_scores_and_targets_reject_bad_input() -> None:
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="\\(N, classes\\)"):
        class_scores(lambda x: x.view(2, 3, 1), logits, 0)
    with pytest.raises(ValueError, match="3 targets for a batch of 2"):
        class_scores(lambda x: x, logits, [0, 1, 2])
    with pytest.raises(ValueError, match="lie in \\[0, 3\\)"):
        class_scores(lambda x: x, logits, [0, 3])
    with pytest.raises(TypeError, match="integer class indices"):
        as_target(np.array([0.5, 1.0]), 2)


def test_keep_mask_is_strictly_above_threshold() -> None:
    y = torch.tensor([0.4, 0.5, 0.6], dtype=torch.float64)
    assert keep_mask(y, 0.5).tolist() == [False, False, True]
    assert keep_mask(y, None).all()


def test_preprocess_scores_the_image_and_checks_its_range() -> None:
    model, images, labels = tiny_setup(n=3)
    normalise = lambda x: (x - 0.5) / 0.5  # noqa: E731
    forward = model_forward(model, normalise)
    maps = torch.rand(3, 1, 8, 8)
    o = class_scores(forward, explanation_maps(maps, images), labels)
    with torch.no_grad():  # E = L (.) I on the image, then the preprocessing
        heat = minmax64(tF.interpolate(maps.double(), size=(16, 16), mode="bilinear"))
        logits = model(normalise((heat * images.double()).float())).double()
    expected = torch.log_softmax(logits, 1).gather(1, labels[:, None])[:, 0]
    torch.testing.assert_close(o.log, expected)
    with pytest.raises(ValueError, match="images in \\[0, 1\\]"):
        forward(images - 0.5)


def test_compute_cams_are_the_method_classes_relu_maps() -> None:
    model, images, labels = tiny_setup()
    cams = compute_cams(model, model.layer, images, labels, ["Grad-CAM", "HiResCAM"])
    for name, cls in (("Grad-CAM", LayerGradCam), ("HiResCAM", LayerHiResCam)):
        expected = cls(model, model.layer).attribute(images, labels, relu_attributions=True)
        torch.testing.assert_close(cams[name], expected.detach())
        assert not cams[name].requires_grad
    post = compute_cams(model, "features.3", images, labels, ["Grad-CAM"], "post-softmax")
    expected = LayerGradCam(lambda x: torch.softmax(model(x), 1), model.layer).attribute(
        images, labels, relu_attributions=True
    )
    torch.testing.assert_close(post["Grad-CAM"], expected.detach())
    with pytest.raises(ValueError, match="maps_from"):
        compute_cams(model, model.layer, images, labels, maps_from="softmax")  # type: ignore[arg-type]


def test_find_layer_errors() -> None:
    model, _, _ = tiny_setup(n=1)
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        find_layer(model, "nope")
    with pytest.raises(TypeError, match="nn.Module or its name"):
        find_layer(model, 3)  # type: ignore[arg-type]


def test_cam_explain_returns_normalised_maps_at_input_size() -> None:
    model, images, labels = tiny_setup()
    got = cam_explain(model, images.numpy(), labels.numpy(), method="gradcam++", layer=model.layer)
    assert isinstance(got, np.ndarray) and got.shape == (6, 1, 16, 16) and got.dtype == np.float32
    cams = compute_cams(model, model.layer, images, labels, ["Grad-CAM++"])["Grad-CAM++"]
    up = tF.interpolate(cams.double(), size=(16, 16), mode="bilinear")
    np.testing.assert_allclose(got, minmax64(up).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="unknown CAM method"):
        cam_explain(model, images.numpy(), labels.numpy(), method="LIME", layer=model.layer)


def test_hirescam_has_no_dead_zone_mass_but_grad_cam_has() -> None:
    """Taimeskhanov et al.: on a model that cannot see the bottom rows, HiResCAM puts 0 there."""
    model, images, labels = tiny_setup(dead_rows=2)
    # layer rows 6-7 are unseen; bilinear upsampling keeps image rows 13-15 free of rows 0-5
    unseen = bottom_rows(16, 16, 3)
    cams = compute_cams(model, model.layer, images, labels, ["Grad-CAM", "HiResCAM"])
    assert cam_dead_zone_mass(cams["HiResCAM"], unseen, "none").eq(0).all()
    assert cam_dead_zone_mass(cams["Grad-CAM"], unseen, "none").gt(0).all()


def test_class_scores_run_a_cpu_batch_in_chunks_with_the_same_scores() -> None:
    """On a CPU, CPU_FORWARD_BYTES of images per forward (larger batches run slower per image
    there); the scores equal a float64 softmax of the one-forward logits, image by image."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 224 * 224, 5)).double()
    rows_per_forward = cpu_forward_rows(3 * 224 * 224 * 8)  # float64 images of 224 x 224: 4
    assert rows_per_forward == 4
    x = torch.randn(2 * rows_per_forward + 3, 3, 224, 224, dtype=torch.float64)
    target = torch.arange(len(x)) % 5
    rows = []
    handle = net.register_forward_pre_hook(lambda module, args: rows.append(len(args[0])))
    found = class_scores(net, x, target)
    handle.remove()
    assert rows == [rows_per_forward, rows_per_forward, 3]
    with torch.no_grad():
        expected = torch.softmax(net(x), dim=1)[torch.arange(len(x)), target]
    torch.testing.assert_close(found.value, expected, rtol=1e-12, atol=0)
