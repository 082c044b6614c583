"""The formulas of metrics.functional against values computed by hand in float64.

Papers (full references in the README): Lerma & Lucas (2022), arXiv:2205.10838; Taimeskhanov, Sicre
& Garreau (2024), arXiv:2404.01964; Singh, Harithas, Khan & Hadi (course report, section 4.2).
"""

from __future__ import annotations

import math

import pytest
import torch

from captum_camplus.masking import bottom_rows
from metrics import functional as F


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# --- average drop (Singh et al., sec. 4.2)
# -------------------------------------------------------------


def test_average_drop_by_hand() -> None:
    y, o = [0.8, 0.5, 0.2, 0.1], [0.4, 0.6, 0.1, 0.1]
    per_image = [100 * max(0.0, yi - oi) / yi for yi, oi in zip(y, o, strict=True)]
    assert per_image == pytest.approx([50.0, 0.0, 50.0, 0.0])
    got = F.average_drop(t(*y), t(*o), reduction="none")
    torch.testing.assert_close(got, t(*per_image))
    assert F.average_drop(t(*y), t(*o)).item() == pytest.approx(sum(per_image) / 4)
    assert got.dtype == torch.float64


def test_average_drop_zero_score_and_batch_of_one() -> None:
    # Y = 0 cannot drop: its relative drop is 0, whatever O is; O = 0 is a full drop.
    torch.testing.assert_close(F.average_drop(t(0.0, 0.3), t(0.2, 0.0), "none"), t(0.0, 100.0))
    assert F.average_drop(t(0.25), t(0.2)).item() == pytest.approx(20.0)


def test_average_drop_float32_scores_are_promoted() -> None:
    got = F.average_drop(torch.tensor([0.5], dtype=torch.float32), torch.tensor([0.25]))
    assert got.dtype == torch.float64 and got.item() == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("y", "o", "match"),
    [
        (t(0.5, -1.0), t(0.2, 0.1), "non-negative"),
        (t(0.5), t(-0.1), "non-negative"),
        (t(0.5, math.nan), t(0.2, 0.1), "NaN"),
        (t(0.5, 0.2), t(0.1), "shape"),
        (torch.ones(2, 2), torch.ones(2, 2), "1-D"),
    ],
)
def test_average_drop_rejects_bad_scores(y: torch.Tensor, o: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        F.average_drop(y, o)


def test_reduction_is_checked() -> None:
    with pytest.raises(ValueError, match="reduction"):
        F.average_drop(t(0.5), t(0.2), reduction="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="zero images"):
        F.increase_in_confidence(t(), t())


# --- increase in confidence (Singh et al., sec. 4.2)
# ---------------------------------------------------


def test_increase_in_confidence_by_hand() -> None:
    y, o = [0.5, 0.5, 0.2, 0.0], [0.6, 0.5, 0.1, 0.1]  # up, equal (not an increase), down, up
    expected = [100.0 * (oi > yi) for yi, oi in zip(y, o, strict=True)]
    torch.testing.assert_close(F.increase_in_confidence(t(*y), t(*o), "none"), t(*expected))
    assert F.increase_in_confidence(t(*y), t(*o)).item() == pytest.approx(50.0)
    # raw logits are fine here
    assert F.increase_in_confidence(t(-3.0), t(-2.0)).item() == 100.0


# --- win percentage ------------------------------------------------------------------------


def test_win_percentage_tie_rule_by_hand() -> None:
    o = torch.tensor(
        [
            [0.9, 0.5, 0.3, 0.1],  # method 0
            [0.2, 0.5, 0.3, 0.2],  # method 1
            [0.1, 0.4, 0.3, 0.7],  # method 2
        ],
        dtype=torch.float64,
    )
    # image 0: method 0 wins; 1: methods 0 and 1 tie; 2: all tie; 3: method 2 wins
    shares = [
        [1, 1 / 2, 1 / 3, 0],
        [0, 1 / 2, 1 / 3, 0],
        [0, 0, 1 / 3, 1],
    ]
    torch.testing.assert_close(F.win_percentage(o, "none"), 100 * torch.tensor(shares).double())
    expected = [100 * sum(row) / 4 for row in shares]
    torch.testing.assert_close(F.win_percentage(o), t(*expected))
    assert F.win_percentage(o).sum().item() == pytest.approx(100.0)


def test_win_percentage_tolerance() -> None:
    # image 0: within 1e-4 of the best (float noise) ties; image 1: 1e-3 apart does not
    o = torch.tensor([[0.5, 0.5], [0.5 * (1 - 5e-5), 0.5 * (1 - 1e-3)]], dtype=torch.float64)
    torch.testing.assert_close(F.win_percentage(o, "none"), t(50.0, 100.0, 50.0, 0.0).view(2, 2))
    torch.testing.assert_close(F.win_percentage(o, "none", rtol=0), t(100, 100, 0, 0).view(2, 2))
    torch.testing.assert_close(F.win_percentage(o, rtol=1e-2), t(50.0, 50.0))
    # raw outputs may be negative: the tolerance is relative to |best|
    logits = torch.tensor([[-2.0], [-2.0 * (1 + 5e-5)], [-2.1]], dtype=torch.float64)
    torch.testing.assert_close(F.win_percentage(logits), t(50.0, 50.0, 0.0))
    with pytest.raises(ValueError, match="rtol must be non-negative"):
        F.win_percentage(o, rtol=-1.0)


def test_win_percentage_prefers_largest_increase_and_single_image() -> None:
    # both maps raise the score (clamped drops would tie at 0): the larger O wins
    torch.testing.assert_close(F.win_percentage(t(0.7, 0.9).view(2, 1)), t(0.0, 100.0))


@pytest.mark.parametrize(
    ("o", "match"),
    [
        (torch.ones(1, 3), "two or more methods"),
        (torch.ones(3), "two or more methods"),
        (torch.tensor([[0.1, math.nan], [0.2, 0.3]]), "NaN"),
    ],
)
def test_win_percentage_rejects(o: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        F.win_percentage(o)


# --- relative performance (Lerma & Lucas, eq. 16-17)
# ---------------------------------------------------


def test_relative_performance_by_hand() -> None:
    new, base = [0.5, 0.2, 0.3], [0.25, 0.4, 0.1]
    ratios = [n / b for n, b in zip(new, base, strict=True)]  # 2, 1/2, 3
    logs = [math.log(r) for r in ratios]
    mean = sum(logs) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in logs) / 3)  # population std
    stats = F.relative_performance(t(*map(math.log, new)), t(*map(math.log, base)))
    assert stats.geometric_mean.item() == pytest.approx(math.prod(ratios) ** (1 / 3), rel=1e-12)
    assert stats.log_mean.item() == pytest.approx(mean, rel=1e-12)
    assert stats.log_std.item() == pytest.approx(std, rel=1e-12)
    torch.testing.assert_close(stats.log_ratio, t(*logs))


def test_relative_performance_batch_of_one() -> None:
    stats = F.relative_performance(t(math.log(0.3)), t(math.log(0.6)))
    assert stats.geometric_mean.item() == pytest.approx(0.5)
    assert stats.log_std.item() == 0.0


def test_relative_performance_tiny_scores_from_log_softmax() -> None:
    # scores near 1e-30 and far below float32's range (1e-60): the ratio comes out exact
    for scale in (1e-30, 1e-60):
        logits = torch.tensor([[0.0, math.log(3 * scale)], [0.0, math.log(scale)]])
        log_p = torch.log_softmax(logits.double(), dim=1)[:, 1]
        stats = F.relative_performance(log_p[:1], log_p[1:])
        a, b = (float(v) for v in logits[:, 1])  # the float32 logits actually used
        expected = math.exp((a - math.log1p(math.exp(a))) - (b - math.log1p(math.exp(b))))
        assert stats.geometric_mean.item() == pytest.approx(expected, rel=1e-12)
        assert stats.geometric_mean.item() == pytest.approx(3.0, rel=1e-5)
    assert float(torch.softmax(logits, dim=1)[1, 1]) == 0.0  # float32 softmax underflows


@pytest.mark.parametrize(
    ("new", "base", "match"),
    [
        (t(-math.inf), t(0.0), "0 or below"),  # a score of exactly 0
        (t(math.nan), t(0.0), "log of a negative"),  # the log of a negative raw output
        (t(0.0, 0.0), t(0.0), "shape"),
        (t(), t(), "at least one image"),
    ],
)
def test_relative_performance_rejects(new: torch.Tensor, base: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        F.relative_performance(new, base)


# --- dead-zone mass (Taimeskhanov et al., eq. 7)
# -------------------------------------------------------------


def test_dead_zone_mass_by_hand() -> None:
    maps = torch.tensor([[[[3.0, 0.0], [0.0, 4.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    bottom_row = bottom_rows(2, 2, 1)
    # image 0: ||(0, 4)|| / ||(3, 0, 0, 4)|| = 4 / 5; image 1: sqrt(2) / sqrt(4)
    expected = t(4 / 5, math.sqrt(2) / 2)
    torch.testing.assert_close(F.dead_zone_mass(maps, bottom_row, "none"), expected)
    assert F.dead_zone_mass(maps, bottom_row).item() == pytest.approx(expected.mean().item())


def test_dead_zone_mass_per_image_masks_and_zero_map() -> None:
    maps = torch.tensor([[[[3.0, 0.0], [0.0, 4.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    masks = torch.tensor([[[True, False], [False, False]], [[True, True], [True, True]]])
    # an all-zero map has no mass anywhere: 0
    torch.testing.assert_close(F.dead_zone_mass(maps, masks, "none"), t(3 / 5, 0.0))
    torch.testing.assert_close(F.dead_zone_mass(maps, masks[:, None], "none"), t(3 / 5, 0.0))


def test_dead_zone_mass_rejects() -> None:
    maps = torch.ones(2, 1, 4, 4)
    with pytest.raises(TypeError, match="boolean"):
        F.dead_zone_mass(maps, torch.ones(4, 4))
    with pytest.raises(ValueError, match="upsample the maps"):
        F.dead_zone_mass(maps, torch.ones(8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="one mask for all images or one per image"):
        F.dead_zone_mass(maps, torch.ones(3, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        F.dead_zone_mass(torch.full((1, 1, 4, 4), math.nan), torch.ones(4, 4, dtype=torch.bool))
