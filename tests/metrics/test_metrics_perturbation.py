"""Deletion and insertion AUC and ROAD against float64 computations of the protocols written
here pixel by pixel, and ROAD's imputation against pytorch-grad-cam's and Quantus' solvers.

Papers (full references in the README): Petsiuk, Das & Saenko (2018), arXiv:1806.07421; Rong,
Leemann, Borisov, Kasneci & Kasneci (2022), arXiv:2202.00449.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from metrics_models import imputation_by_hand, tiny_setup

from metrics import perturbation as P

# the peers' scipy solvers warn of numpy 2's __array_wrap__
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")

STEPS = 7  # does not divide 16 * 16 pixels: the rounding of k_s matters


@pytest.fixture(scope="module")
def setup():
    model, images, labels = tiny_setup(n=3, size=16)
    model64 = copy.deepcopy(model).double()
    generator = torch.Generator().manual_seed(5)
    # two kinds of map: continuous ones, and coarse ones full of ties
    smooth = torch.rand(3, 1, 16, 16, generator=generator, dtype=torch.float64)
    coarse = (smooth * 3).floor()
    return model64, images.double(), labels, torch.stack([smooth, coarse])


def softmax_score(model, image: torch.Tensor, label: int) -> float:
    with torch.no_grad():
        logits = model(image[None])[0].tolist()
    top = max(logits)
    return math.exp(logits[label] - top) / sum(math.exp(z - top) for z in logits)


def by_hand_curve(model, image, heat, label, substrate, insert: bool, steps: int):
    """The protocol as written in the issue, one pixel at a time."""
    channels, h, w = image.shape
    values = heat.reshape(-1).tolist()
    order = sorted(range(h * w), key=lambda i: (-values[i], i))
    fractions, scores = [], []
    for s in range(steps + 1):
        k = round(s * h * w / steps)
        chosen = set(order[:k])
        out = torch.empty_like(image)
        for i in range(h * w):
            row, col = divmod(i, w)
            take_image = (i in chosen) if insert else (i not in chosen)
            for c in range(channels):
                out[c, row, col] = image[c, row, col] if take_image else substrate[c, row, col]
        fractions.append(k / (h * w))
        scores.append(softmax_score(model, out, label))
    area = sum(
        (fractions[s] - fractions[s - 1]) * (scores[s] + scores[s - 1]) / 2
        for s in range(1, steps + 1)
    )
    return scores, area


@pytest.mark.parametrize("insert", [False, True])
def test_auc_equals_the_protocol_pixel_by_pixel(setup, insert: bool) -> None:
    model, images, labels, maps = setup
    substrate = P.gaussian_blur(images) if insert else torch.zeros_like(images)
    auc = (P.insertion_auc if insert else P.deletion_auc)(model, images, maps, labels, steps=STEPS)
    curve, _ = P.perturbation_curve(model, images, maps, labels, steps=STEPS, insert=insert)
    assert auc.shape == (2, 3) and auc.dtype == torch.float64
    for k in range(2):
        for i in range(3):
            scores, area = by_hand_curve(
                model, images[i], maps[k, i], int(labels[i]), substrate[i], insert, STEPS
            )
            torch.testing.assert_close(curve[k, i], torch.tensor(scores, dtype=torch.float64))
            assert auc[k, i].item() == pytest.approx(area, abs=1e-12)


def test_float32_model_and_one_map_per_image(setup) -> None:
    model64, images, labels, maps = setup
    model = copy.deepcopy(model64).float()
    one = P.deletion_auc(model, images.float(), maps[0].float(), labels, steps=STEPS)
    both = P.deletion_auc(model64, images, maps, labels, steps=STEPS)
    assert one.shape == (3,)
    torch.testing.assert_close(one, both[0], atol=1e-5, rtol=0)
    squeezed = P.deletion_auc(model, images.float(), maps[0, :, 0].float(), labels, steps=STEPS)
    torch.testing.assert_close(squeezed, one)
    mean = P.deletion_auc(
        model, images.float(), maps[0].float(), labels, steps=STEPS, reduction="mean"
    )
    torch.testing.assert_close(mean, one.mean())


def test_the_ends_of_the_curves(setup) -> None:
    model, images, labels, maps = setup
    full = torch.tensor(
        [softmax_score(model, x, int(c)) for x, c in zip(images, labels, strict=True)]
    )
    deletion, fraction = P.perturbation_curve(model, images, maps, labels, steps=4)
    insertion, _ = P.perturbation_curve(model, images, maps, labels, steps=4, insert=True)
    torch.testing.assert_close(fraction, torch.tensor([0, 0.25, 0.5, 0.75, 1], dtype=torch.float64))
    torch.testing.assert_close(deletion[..., 0], full.expand(2, 3).double())  # nothing deleted
    torch.testing.assert_close(insertion[..., -1], full.expand(2, 3).double())  # all inserted
    # a substrate equal to the image changes nothing: a flat curve whose area is the score
    same = P.deletion_auc(model, images, maps, labels, steps=5, substrate=images)
    torch.testing.assert_close(same, full.expand(2, 3).double())
    # one substrate for all images, e.g. a grey image
    grey = torch.full(images.shape[1:], 0.5, dtype=torch.float64)
    auc = P.deletion_auc(model, images, maps, labels, steps=3, substrate=grey)
    manual = P.deletion_auc(model, images, maps, labels, steps=3, substrate=grey.expand_as(images))
    torch.testing.assert_close(auc, manual)


def test_one_batched_forward_per_step(setup) -> None:
    model, images, labels, maps = setup
    batches = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        batches.append(len(x))
        return model(x)

    P.insertion_auc(forward, images, maps, labels, steps=6)
    assert batches == [2 * 3] * 7
    batches.clear()
    P.road_curve(forward, images, maps, labels, percentiles=(20, 50))
    assert batches == [2 * 3] * 2


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_bad_steps_are_refused(setup, steps) -> None:
    model, images, labels, maps = setup
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        P.deletion_auc(model, images, maps, labels, steps=steps)


def test_bad_substrates_and_maps_are_refused(setup) -> None:
    model, images, labels, maps = setup
    with pytest.raises(ValueError, match=r"substrate must have the inputs' shape \(3, 3, 16, 16\)"):
        P.deletion_auc(model, images, maps, labels, steps=4, substrate=torch.zeros(3, 3, 8, 8))
    with pytest.raises(ValueError, match="at the inputs' size, e.g. with captum_camplus.upsample"):
        P.insertion_auc(model, images, maps[..., ::2, ::2], labels, steps=4)  # layer-sized maps
    with pytest.raises(ValueError, match="do not fit inputs"):
        P.deletion_auc(model, images, maps[:, :2], labels, steps=4)  # two maps for three images
    with pytest.raises(ValueError, match="NaN"):
        P.deletion_auc(model, images, torch.full_like(maps, math.nan), labels, steps=4)
    with pytest.raises(ValueError, match=r"inputs must be a tensor of images \(N, C, H, W\)"):
        P.deletion_auc(model, images[0], maps[0, 0], labels, steps=4)
    with pytest.raises(ValueError, match="inputs contain NaN or inf"):
        P.insertion_auc(model, images * math.inf, maps, labels, steps=4)
    with pytest.raises(ValueError, match="scores must be one of"):
        P.deletion_auc(model, images, maps, labels, steps=4, scores="logits")


def test_ties_are_broken_by_flat_index() -> None:
    flat = torch.tensor([[[0.5, 1.0, 0.5, 1.0, 0.0]]], dtype=torch.float64)
    assert P.relevance_rank(flat).tolist() == [[[2, 0, 3, 1, 4]]]


def test_gaussian_blur_against_scipy(setup) -> None:
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    _, images, _, _ = setup
    blurred = P.gaussian_blur(images, sigma=1.5)
    expected = scipy_ndimage.gaussian_filter(
        images.numpy(), sigma=(0, 0, 1.5, 1.5), mode="nearest", truncate=3.0
    )
    np.testing.assert_allclose(blurred.numpy(), expected, atol=1e-12)


# --- ROAD (Rong et al.)
# -----------------------------------------------------------------------------


def test_road_equals_the_protocol(setup) -> None:
    model, images, labels, maps = setup
    percentiles = (10, 45, 90)
    for order in ("most", "least"):
        curve = P.road_curve(
            model, images, maps, labels, order=order, percentiles=percentiles, noise=0.0
        )
        assert curve.shape == (2, 3, 3)
        for k in range(2):
            for i in range(3):
                values = maps[k, i].reshape(-1).tolist()
                ranked = sorted(range(256), key=lambda j: (-values[j], j))
                if order == "least":
                    ranked = ranked[::-1]
                for column, p in enumerate(percentiles):
                    removed = np.zeros(256, dtype=bool)
                    removed[ranked[: round(p * 256 / 100)]] = True
                    imputed = imputation_by_hand(images[i].numpy(), removed.reshape(16, 16))
                    score = softmax_score(model, torch.from_numpy(imputed), int(labels[i]))
                    assert curve[k, i, column].item() == pytest.approx(score, abs=1e-7)


def test_road_is_seeded_and_refuses_bad_options(setup) -> None:
    model, images, labels, maps = setup
    first, second = (
        P.road_curve(model, images, maps, labels, percentiles=(50,), seed=4) for _ in range(2)
    )
    torch.testing.assert_close(first, second)
    other = P.road_curve(model, images, maps, labels, percentiles=(50,), seed=5)
    assert not torch.equal(first, other)
    with pytest.raises(ValueError, match="'most' \\(MoRF\\) or 'least'"):
        P.road_curve(model, images, maps, labels, order="top")
    with pytest.raises(ValueError, match=r"percentages in \[0, 100\)"):
        P.road_curve(model, images, maps, labels, percentiles=(50, 100))
    with pytest.raises(ValueError, match="noise must be non-negative"):
        P.road_curve(model, images, maps, labels, noise=-1.0)


def test_road_equals_pytorch_grad_cam_with_its_percentile_kept(setup) -> None:
    """pytorch-grad-cam's ``percentile`` is the share of pixels it keeps (it removes those at
    or above the map's ``percentile``-th percentile), so its 90 is ROAD's 10 % removed."""
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    targets = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    model, images, labels, maps = setup
    smooth = maps[0]  # no ties: the percentile threshold and the order pick the same pixels
    chosen = [targets.ClassifierOutputSoftmaxTarget(int(c)) for c in labels]
    model32 = copy.deepcopy(model).float()
    for ours, theirs in (
        ("most", road.ROADMostRelevantFirst),
        ("least", road.ROADLeastRelevantFirst),
    ):
        for removed in (10, 50, 90):
            metric = theirs(percentile=100 - removed)
            metric.perturbation.imputer.noise = 0.0
            peer = metric(images.float(), smooth[:, 0].numpy(), chosen, model32, return_diff=False)
            got = P.road_curve(
                model, images, smooth, labels, order=ours, percentiles=(removed,), noise=0.0
            )
            np.testing.assert_allclose(got[:, 0].numpy(), peer, atol=1e-5)


class _Grey(torch.nn.Module):
    """A one-channel model, the only inputs Quantus' ROAD can take (see the next test)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.repeat(1, 3, 1, 1))


@pytest.fixture(scope="module")
def grey():
    model, images, _ = tiny_setup(n=4, size=16)
    net = _Grey(model).eval()
    x = images.mean(dim=1, keepdim=True)
    with torch.no_grad():
        labels = net(x).argmax(dim=1)
    maps = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    return net, x, labels, maps


@pytest.mark.filterwarnings("ignore")
def test_quantus_road_is_the_accuracy_on_our_imputed_images_in_one_batch(grey) -> None:
    """Quantus' ROAD scores whether the prediction stays the label (accuracy), not the score;
    on one batch of one-channel images it agrees with our imputation."""
    quantus = pytest.importorskip("quantus")
    net, x, labels, maps = grey
    wrong = (labels + 1) % 5
    labels = torch.cat([wrong[:1], labels[1:]])  # one image the model gets wrong
    percentiles = [10, 50, 90]
    predictions = []

    def forward(images: torch.Tensor) -> torch.Tensor:
        outputs = net(images)
        predictions.append(outputs.argmax(dim=1))
        return outputs

    P.road_curve(forward, x, maps, labels, percentiles=percentiles, noise=0.0)
    ours = [(p == labels).double().mean().item() for p in predictions]
    theirs = quantus.ROAD(percentages=percentiles, noise=0.0, disable_warnings=True)(
        model=net, x_batch=x.numpy(), y_batch=labels.numpy(), a_batch=maps.numpy(), device="cpu"
    )
    assert list(theirs.values()) == pytest.approx(ours)


@pytest.mark.filterwarnings("ignore")
def test_quantus_road_keeps_only_its_first_batch_and_fails_on_colour_images(grey, setup) -> None:
    """Two faults of Quantus 0.6's ROAD that ours does not have (docs/metrics.md): with several
    batches it reports the first batch alone, and it ranks the map broadcast to every channel,
    so a colour image with one map per image indexes past its pixels."""
    quantus = pytest.importorskip("quantus")
    net, x, labels, maps = grey
    wrong = torch.cat([labels[:2], (labels[2:] + 1) % 5])  # the second batch all wrong
    kwargs = {"x_batch": x.numpy(), "y_batch": wrong.numpy(), "a_batch": maps.numpy()}
    road = quantus.ROAD(percentages=[10], noise=0.0, disable_warnings=True)
    assert road(model=net, **kwargs, device="cpu", batch_size=2) == {10: 1.0}  # not 0.5
    model, images, labels3, maps3 = setup
    with pytest.raises(IndexError):
        quantus.ROAD(percentages=[50], disable_warnings=True)(
            model=copy.deepcopy(model).float(),
            x_batch=images.float().numpy(),
            y_batch=labels3.numpy(),
            a_batch=maps3[0].float().numpy(),
            device="cpu",
        )


# --- the Quantus metrics
# ---------------------------------------------------------------------------


def test_quantus_metrics_equal_the_functions(setup) -> None:
    from metrics import (
        DeletionAUC,
        InsertionAUC,
        RoadLeastRelevantFirst,
        RoadMostRelevantFirst,
        cam_explain,
    )

    model64, images64, labels, _ = setup
    model, images = copy.deepcopy(model64).float(), images64.float()
    maps = torch.from_numpy(
        cam_explain(model, images.numpy(), labels.numpy(), method="Grad-CAM++", layer=model.layer)
    )
    call = {
        "model": model,
        "x_batch": images.numpy(),
        "y_batch": labels.numpy(),
        "explain_func": cam_explain,
        "explain_func_kwargs": {"method": "Grad-CAM++", "layer": model.layer},
        "batch_size": 2,
    }
    deletion = DeletionAUC(steps=9, return_aggregate=False)(**call)
    expected = P.deletion_auc(model, images, maps, labels, steps=9)
    np.testing.assert_allclose(deletion, expected.numpy(), rtol=1e-6)
    grey = torch.full((3, 16, 16), 0.5)
    insertion = InsertionAUC(steps=9, substrate=lambda x: grey.expand_as(x))(**call)
    expected = P.insertion_auc(model, images, maps, labels, steps=9, substrate=grey)
    assert insertion == pytest.approx([expected.mean().item()], rel=1e-6)
    for metric, order in ((RoadMostRelevantFirst, "most"), (RoadLeastRelevantFirst, "least")):
        got = metric(percentiles=(30, 60), noise=0.0, return_aggregate=False)(**call)
        curve = P.road_curve(
            model, images, maps, labels, order=order, percentiles=(30, 60), noise=0
        )
        np.testing.assert_allclose(got, curve.mean(dim=-1).numpy(), rtol=1e-6)
