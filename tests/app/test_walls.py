"""Masked models, dead zones, theorem 3 and the dead-zone-mass table of Taimeskhanov et al.

Papers (full references in the README): Taimeskhanov, Sicre & Garreau (2024), arXiv:2404.01964.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam as CaptumLayerGradCam
from torch import nn

from camplus_app.walls import (
    WALL_METHODS,
    Theorem3CNN,
    WallCNN,
    WalledCNN,
    dead_zone_masses,
    stack_mix_digits,
    theorem3_experiment,
)
from camplus_app.walls.experiment import torch_threads
from captum_camplus import LayerHiResCam
from captum_camplus.masking import bottom_rows, mask_linear_input, max_output_change, unseen_region


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dead_zone_mass_reference(maps: torch.Tensor, dead_zone: torch.Tensor) -> torch.Tensor:
    """Eq. 7 of Taimeskhanov et al. in float64: mu = ||L on the dead zone||_2 / ||L||_2, L the map
    min-max normalised to [0, 1] (an all-zero map has mu = 0)."""
    up = F.interpolate(maps.double(), size=dead_zone.shape, mode="bilinear", align_corners=False)
    up = up[:, 0]
    mus = []
    for lam in up:
        low, high = lam.min(), lam.max()
        lam = (lam - low) / (high - low) if high > low else (lam > 0).double()
        total = math.sqrt(sum(float(v) ** 2 for v in lam.flatten()))
        inside = math.sqrt(sum(float(v) ** 2 for v in lam[dead_zone]))
        mus.append(inside / total if total > 0 else 0.0)
    return torch.tensor(mus, dtype=torch.float64)


# --- the wall: masked weights -------------------------------------------------------------


def test_mask_zeroes_the_columns_of_unseen_positions_in_flatten_order():
    linear = nn.Linear(2 * 3 * 4, 5)
    before = linear.weight.detach().clone()
    unseen = torch.zeros(3, 4, dtype=torch.bool)
    unseen[2] = True
    unseen[0, 1] = True
    mask_linear_input(linear, (2, 3, 4), unseen)
    weight = linear.weight.detach()
    for column in range(24):  # nn.Flatten order: column = c * 12 + h * 4 + w
        h, w = (column % 12) // 4, column % 4
        expected = torch.zeros(5) if unseen[h, w] else before[:, column]
        assert torch.equal(weight[:, column], expected), column


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9, weight_decay=0.1),
        lambda p: torch.optim.Adam(p, lr=0.1, weight_decay=0.1),
        lambda p: torch.optim.AdamW(p, lr=0.1),
    ],
)
def test_masked_weights_stay_exactly_zero_through_training(make_optimizer):
    torch.manual_seed(0)
    model = WallCNN()
    hidden = model.view_mask.hidden.expand_as(model.head[1].weight)
    start = model.head[1].weight.detach().clone()
    optimizer = make_optimizer(model.parameters())
    x, y = torch.rand(8, 1, 16, 8, generator=generator()), torch.arange(8)
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    weight = model.head[1].weight.detach()
    assert bool((weight[hidden] == 0).all())
    assert bool((weight[~hidden] != start[~hidden]).all())  # the rest did train


def test_output_does_not_depend_on_the_unseen_part_of_the_layer_map():
    torch.manual_seed(0)
    model = WallCNN().eval()
    x = torch.rand(4, 1, 16, 8, generator=generator())
    unseen = model.cam_unseen()

    def replace(region):
        def hook(_module, _inputs, out):
            noise = torch.randn(out.shape, generator=generator(1)) * 10
            return torch.where(region, noise, out)

        return hook

    with torch.no_grad():
        reference = model(x)
        for region, changes in ((unseen, False), (~unseen, True)):
            handle = model.cam_layer.register_forward_hook(replace(region))
            try:
                out = model(x)
            finally:
                handle.remove()
            assert torch.equal(out, reference) != changes


# --- the dead zone: receptive fields ------------------------------------------------------


def test_dead_zones_of_the_two_models():
    assert torch.equal(WallCNN().dead_zone(), bottom_rows(16, 8, 8))
    assert torch.equal(WallCNN().cam_unseen(), bottom_rows(8, 4, 6))
    model = Theorem3CNN((18, 18), filters=4, kernel_size=3, pool=2)
    # B rows h/2.. feed only the walled-off pooled rows; input rows >= h/2 + k - 1 only those
    assert torch.equal(model.cam_unseen(), bottom_rows(16, 16, 8))
    assert torch.equal(model.dead_zone(), bottom_rows(18, 18, 18 - (8 + 3 - 1)))


@pytest.mark.parametrize(
    "model",
    [
        lambda: WallCNN(),
        lambda: WallCNN(unseen_rows=3),
        lambda: Theorem3CNN((18, 18), filters=8, generator=generator()),
    ],
)
def test_the_model_cannot_see_its_dead_zone_and_sees_the_row_above(model):
    torch.manual_seed(0)
    model = model().eval()
    x = torch.rand(6, 1, *model.image_size, generator=generator())
    dead = model.dead_zone()
    assert max_output_change(model, x, dead, generator=generator(2)) == 0.0
    last_seen = int((~dead).any(dim=1).nonzero().max())  # the zone is tight
    row = torch.zeros_like(dead)
    row[last_seen] = True
    assert max_output_change(model, x, row, generator=generator(2)) > 0.0


def test_a_plain_model_walled_by_hand_cannot_see_its_dead_zone():
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(3, 4, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.GELU(),
    )
    head = nn.Sequential(nn.Flatten(), nn.Linear(6 * 6 * 6, 7), nn.Tanh(), nn.Linear(7, 3))
    model = nn.Sequential(features, head).eval()
    mask = mask_linear_input(head[1], (6, 6, 6), bottom_rows(6, 6, 3))
    zone = unseen_region(features, (21, 19), mask.unseen)
    assert 0 < int(zone.sum()) < zone.numel()
    x = torch.rand(5, 3, 21, 19, generator=generator())
    assert max_output_change(model, x, zone, generator=generator(1)) == 0.0
    assert max_output_change(model, x, ~zone, generator=generator(1)) > 0.0


def support_reference(layers: list[nn.Module], size, unseen: torch.Tensor) -> torch.Tensor:
    """Independent receptive field: the input gradient of the seen outputs of a copy of the
    chain with all-ones kernels and average pooling (no cancellation, same windows)."""
    surrogate = []
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            conv = nn.Conv2d(
                1, 1, layer.kernel_size, layer.stride, layer.padding, layer.dilation, bias=False
            )
            nn.init.ones_(conv.weight)
            surrogate.append(conv)
        elif isinstance(layer, nn.MaxPool2d):
            assert layer.dilation == 1
            surrogate.append(
                nn.AvgPool2d(
                    layer.kernel_size, layer.stride, layer.padding, ceil_mode=layer.ceil_mode
                )
            )
        elif isinstance(layer, nn.AdaptiveMaxPool2d):
            surrogate.append(nn.AdaptiveAvgPool2d(layer.output_size))
        elif isinstance(layer, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            surrogate.append(layer)
    x = torch.ones(1, 1, *size, dtype=torch.float64, requires_grad=True)
    out = nn.Sequential(*surrogate).double()(x)
    (grad,) = torch.autograd.grad((out[0, 0] * (~unseen).double()).sum(), x)
    return grad[0, 0] == 0


@pytest.mark.parametrize(
    ("layers", "size"),
    [
        ([nn.Conv2d(1, 1, 3), nn.ReLU(), nn.MaxPool2d(2)], (18, 14)),
        (
            [nn.Conv2d(1, 1, 5, stride=2, padding=2), nn.MaxPool2d(3, 2, 1, ceil_mode=True)],
            (29, 17),
        ),
        ([nn.Conv2d(1, 1, 3, dilation=2, padding=1), nn.AvgPool2d(2, ceil_mode=True)], (21, 13)),
        ([nn.Conv2d(1, 1, (3, 1), padding="same"), nn.AdaptiveMaxPool2d((5, 3))], (17, 11)),
        ([nn.Conv2d(1, 1, 2, padding="same"), nn.AdaptiveAvgPool2d((4, None))], (13, 6)),
    ],
)
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_unseen_region_matches_the_gradient_support(layers, size):
    with torch.no_grad():
        out_shape = nn.Sequential(*layers)(torch.zeros(1, 1, *size)).shape[-2:]
    for rows in range(1, out_shape[0]):
        unseen = bottom_rows(*out_shape, rows)
        unseen[:, 0] = True  # and a column, to exercise both axes
        expected = support_reference(layers, size, unseen)
        assert torch.equal(unseen_region(nn.Sequential(*layers), size, unseen), expected), rows


# --- Taimeskhanov et al., theorem 3 at initialization
# ------------------------------------------------------


def test_theorem3_closed_form_of_grad_cam():
    """Proposition 2, L = 1: alpha_v = (1/hw) sum_p W_p^(v), GC = ReLU(sum a B)."""
    model = Theorem3CNN((10, 10), filters=6, generator=generator(3))
    x = torch.rand(2, 1, 10, 10, generator=generator(4))
    b = F.relu(F.conv2d(x.double(), model.features[0].weight.double()))  # (2, 6, 8, 8)
    weight = model.head[1].weight.detach().double().view(6, 4, 4)
    alpha = weight.sum(dim=(1, 2)) / 64
    expected = F.relu((alpha.view(1, 6, 1, 1) * b).sum(dim=1, keepdim=True))
    captum = CaptumLayerGradCam(model, model.cam_layer).attribute(x, 0, relu_attributions=True)
    torch.testing.assert_close(captum.double(), expected, rtol=1e-5, atol=1e-6)
    assert bool((weight[:, 2:] == 0).all())


def test_theorem3_grad_cam_sees_through_the_wall_and_hirescam_does_not():
    x = torch.rand(3, 1, 10, 10, generator=generator(5))
    filters, seeds, tau = 32, 200, 1.0
    with torch_threads(1):
        result = theorem3_experiment(x, seeds=seeds, filters=filters, tau=tau)
    assert torch.equal(result.unseen, bottom_rows(8, 8, 4))
    assert result.max_unseen["HiResCAM"] == 0.0
    assert result.unseen_mean(result.mean_maps["HiResCAM"]) == 0.0
    for name in ("Grad-CAM", "Grad-CAM+", "Grad-CAM++"):
        assert result.unseen_mean(result.mean_maps[name]) > 0.0, name
    # Taimeskhanov et al., eq. 11 from scratch: given the filters, sum_v alpha_v B_v is N(0, s^2)
    # with s^2 = (tau / hw)^2 (h'w' / 2) sum_v B_v^2, and E[ReLU(N(0, s^2))] = s / sqrt(2 pi).
    h = w = 8
    expected = torch.zeros(3, h, w, dtype=torch.float64)
    for seed in range(seeds):
        model = Theorem3CNN((10, 10), filters=filters, tau=tau, generator=generator(seed))
        b = F.relu(F.conv2d(x.double(), model.features[0].weight.detach().double()))
        s = tau / (h * w) * math.sqrt(16 / 2) * b.square().sum(dim=1).sqrt()
        expected += s / math.sqrt(2 * math.pi) / seeds
    torch.testing.assert_close(result.predicted, expected)
    empirical = result.unseen_mean(result.mean_maps["Grad-CAM"])
    assert empirical == pytest.approx(result.unseen_mean(expected), rel=0.2)
    assert empirical >= result.unseen_mean(result.bound) > 0  # Taimeskhanov et al., eq. 5, V > 20


# --- STACK-MIX-digits ---------------------------------------------------------------------


def test_stack_mix_digits_pairs_same_class_digits():
    from camplus_app.walls import load_digits_tensors

    digits, labels = load_digits_tensors()
    test, train = stack_mix_digits("test"), stack_mix_digits("train")
    assert test.images.shape == (539, 1, 16, 8) and len(train) == 1797 - 539
    assert not bool(torch.isin(test.top, train.top).any())
    for data in (test, train):
        assert torch.equal(labels[data.top], data.labels)
        assert torch.equal(labels[data.bottom], data.labels)
        assert not bool((data.top == data.bottom).any())
        assert torch.equal(data.top.sort().values, data.bottom.sort().values)  # each once below
        assert torch.equal(data.images[:, :, :8], digits[data.top])
        assert torch.equal(data.images[:, :, 8:], digits[data.bottom])
    assert torch.equal(stack_mix_digits("test", seed=0).bottom, test.bottom)
    assert not torch.equal(stack_mix_digits("test", seed=1).bottom, test.bottom)


# --- dead-zone mass of each method --------------------------------------------------------


def test_hirescam_dead_zone_mass_is_exactly_zero_and_grad_cams_is_not():
    torch.manual_seed(0)
    model = WallCNN().eval()
    images = stack_mix_digits("test").images[:64]
    masses, zeros = dead_zone_masses(model, images)
    assert list(masses) == list(WALL_METHODS)
    assert bool((masses["HiResCAM"] == 0).all())
    for name in ("Grad-CAM", "Grad-CAM+", "Grad-CAM++"):
        assert masses[name].mean() > 0.1, name
    predicted = model(images).argmax(dim=1)
    hires = (
        LayerHiResCam(model, model.cam_layer)
        .attribute(images, predicted, relu_attributions=True)
        .detach()
    )
    torch.testing.assert_close(
        masses["HiResCAM"], dead_zone_mass_reference(hires, model.dead_zone())
    )
    gradcam = CaptumLayerGradCam(model, model.cam_layer).attribute(
        images, predicted, relu_attributions=True
    )
    reference = dead_zone_mass_reference(gradcam.detach(), model.dead_zone())
    torch.testing.assert_close(masses["Grad-CAM"], reference)
    assert zeros["Grad-CAM"] == int((gradcam.flatten(1).amax(1) == 0).sum())


@pytest.mark.slow
def test_trained_table():
    from camplus_app.walls import run_walls

    report = run_walls(epochs=10, seed=0)
    assert report.training.test_accuracy > 0.9
    assert bool((report.masses["HiResCAM"] == 0).all())
    for name in ("Grad-CAM", "Grad-CAM+", "Grad-CAM++"):
        assert report.masses[name].mean() > 0.2, name
    table = report.table()
    for name in WALL_METHODS:
        assert name in table
    assert "0.0 ± 0.0" in table


def test_command_line_prints_both_results(capsys):
    from camplus_app.walls.__main__ import main

    main(["--seeds", "3", "--epochs", "1"])
    out = capsys.readouterr().out
    assert "Taimeskhanov et al., theorem 3" in out and "Dead-zone mass" in out
    assert "HiResCAM" in out and "0.0 ± 0.0" in out


# --- errors -------------------------------------------------------------------------------


def test_errors():
    unseen = bottom_rows(3, 4, 1)
    with pytest.raises(TypeError, match="nn.Linear"):
        mask_linear_input(nn.Conv2d(1, 1, 1), (2, 3, 4), unseen)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        mask_linear_input(nn.Linear(24, 2), (24,), unseen)
    with pytest.raises(ValueError, match="reads 25"):
        mask_linear_input(nn.Linear(25, 2), (2, 3, 4), unseen)
    with pytest.raises(TypeError, match="boolean"):
        mask_linear_input(nn.Linear(24, 2), (2, 3, 4), unseen.float())
    with pytest.raises(ValueError, match="expected the map size"):
        mask_linear_input(nn.Linear(24, 2), (2, 3, 4), bottom_rows(4, 3, 1))
    with pytest.raises(ValueError, match="whole map"):
        mask_linear_input(nn.Linear(24, 2), (2, 3, 4), bottom_rows(3, 4, 3))
    linear = nn.Linear(24, 2)
    mask_linear_input(linear, (2, 3, 4), unseen)
    with pytest.raises(ValueError, match="already parametrized"):
        mask_linear_input(linear, (2, 3, 4), unseen)
    with pytest.raises(ValueError, match="rows must be in 1..3"):
        bottom_rows(3, 4, 0)
    with pytest.raises(TypeError, match="cannot trace the receptive field through GroupNorm"):
        unseen_region([nn.Conv2d(1, 1, 3), nn.GroupNorm(1, 1)], (8, 8), bottom_rows(6, 6, 1))
    with pytest.raises(ValueError, match="training mode"):
        unseen_region(nn.BatchNorm2d(1), (8, 8), bottom_rows(8, 8, 1))
    with pytest.raises(ValueError, match="zero padding"):
        unseen_region(nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular"), (8, 8), unseen)
    with pytest.raises(ValueError, match=r"map \(8, 8\) to \(6, 6\)"):
        unseen_region(nn.Conv2d(1, 1, 3), (8, 8), bottom_rows(8, 8, 1))
    with pytest.raises(ValueError, match="does not fit"):
        unseen_region(nn.Conv2d(1, 1, 5), (3, 8), bottom_rows(1, 4, 1))
    with pytest.raises(ValueError, match="expected the input size"):
        max_output_change(WallCNN(), torch.rand(1, 1, 16, 8), bottom_rows(8, 8, 1))
    with pytest.raises(ValueError, match="even pooled height"):
        Theorem3CNN((16, 16))
    with pytest.raises(ValueError, match="must be even"):
        WallCNN(image_size=(15, 8))
    with pytest.raises(ValueError, match="nn.Flatten"):
        WalledCNN(nn.Sequential(nn.Conv2d(1, 1, 1)), nn.Sequential(nn.Linear(4, 1)), (2, 2), 1, 1)
    with pytest.raises(ValueError, match="split must be"):
        stack_mix_digits("validation")
    with pytest.raises(ValueError, match="grayscale"):
        theorem3_experiment(torch.rand(1, 3, 10, 10))
    with pytest.raises(ValueError, match="seeds must be positive"):
        theorem3_experiment(torch.rand(1, 1, 10, 10), seeds=0)
