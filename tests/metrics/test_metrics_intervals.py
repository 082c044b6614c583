"""Bootstrap intervals, the sign test and the digits of tables, against independent computations.

The bootstrap is checked against a slow loop that redraws the documented indices (numpy PCG64,
one ``integers(0, N, N)`` call per resample), applies the metrics of ``metrics.functional`` to
each resample and to the images without each image in turn (the jackknife), and reads the BCa
ends off them in plain Python (Efron & Tibshirani (1993), chapter 14); against
``scipy.stats.bootstrap(method="BCa")`` given the same resamples; and against closed forms
(constant values, identical methods).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from statistics import NormalDist

import numpy as np
import pytest
import torch

from metrics import functional as F
from metrics import intervals
from metrics.digits import decimals, format_estimate, with_intervals
from metrics.result import EvaluationResult

RESAMPLES = 300


def scores(methods: int = 3, images: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    y = 0.5 + 0.5 * torch.rand(images, generator=generator, dtype=torch.float64)
    o = y * torch.rand(methods, images, generator=generator, dtype=torch.float64) * 1.3
    o[1, :5] = o[0, :5]  # ties for win % and the pairwise comparison
    return y, o


def explicit_quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile by sorting (linear interpolation between order statistics)."""
    ordered = sorted(values)
    h = (len(ordered) - 1) * q
    below = math.floor(h)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (h - below) * (ordered[above] - ordered[below])


def explicit_percentiles(stats: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """The 2.5 % and 97.5 % quantiles of each column."""
    columns = list(zip(*stats, strict=True))
    return tuple(  # type: ignore[return-value]
        np.array([explicit_quantile(list(c), q) for c in columns]) for q in (0.025, 0.975)
    )


def explicit_bca(
    stats: list[list[float]], estimate: list[float], jackknife: list[list[float]]
) -> tuple[np.ndarray, np.ndarray]:
    """BCa ends per column, from Efron & Tibshirani's formulas in plain Python floats."""
    normal, lows, highs = NormalDist(), [], []
    for j, theta in enumerate(estimate):
        boot = [row[j] for row in stats]
        b = len(boot)
        p0 = (sum(t < theta for t in boot) + sum(t <= theta for t in boot)) / (2 * b)
        z0 = normal.inv_cdf(min(max(p0, 0.5 / b), 1 - 0.5 / b))
        jack = [row[j] for row in jackknife]
        centre = math.fsum(jack) / len(jack)
        squares = math.fsum((centre - t) ** 2 for t in jack)
        a = math.fsum((centre - t) ** 3 for t in jack) / (6 * squares**1.5) if squares else 0.0
        ends = []
        for tail in (0.025, 0.975):
            shifted = z0 + normal.inv_cdf(tail)
            ends.append(explicit_quantile(boot, normal.cdf(z0 + shifted / (1 - a * shifted))))
        lows.append(ends[0])
        highs.append(ends[1])
    return np.array(lows), np.array(highs)


def draws(images: int, seed: int = 0, resamples: int = RESAMPLES) -> list[np.ndarray]:
    """The documented draws: one ``integers(0, N, N)`` call per resample."""
    generator = np.random.Generator(np.random.PCG64(seed))
    return [generator.integers(0, images, images) for _ in range(resamples)]


def loop_bca(
    images: int, statistic: Callable[[list[int]], list[float]], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """BCa ends of ``statistic(image indices)`` by an explicit loop over the documented draws
    and the leave-one-out samples."""
    every = list(range(images))
    stats = [statistic(index.tolist()) for index in draws(images, seed)]
    jackknife = [statistic(every[:i] + every[i + 1 :]) for i in every]
    return explicit_bca(stats, statistic(every), jackknife)


def test_score_intervals_equal_an_explicit_loop() -> None:
    y, o = scores()

    def statistic(index: list[int]) -> list[float]:
        picked = torch.tensor(index)
        yi, oi = y[picked], o[:, picked]
        return (
            [float(F.average_drop(yi, row)) for row in oi]
            + [float(F.increase_in_confidence(yi, row)) for row in oi]
            + F.win_percentage(oi).tolist()  # win % decided within the resample
        )

    got = F.score_intervals(y, o, resamples=RESAMPLES, seed=3)
    low, high = loop_bca(y.numel(), statistic, seed=3)
    m = o.shape[0]
    for k, interval in enumerate(got):
        np.testing.assert_allclose(interval.low.numpy(), low[k * m : (k + 1) * m], rtol=1e-12)
        np.testing.assert_allclose(interval.high.numpy(), high[k * m : (k + 1) * m], rtol=1e-12)


def test_relative_performance_intervals_equal_an_explicit_loop() -> None:
    _, o = scores()

    def statistic(index: list[int]) -> list[float]:
        ratios = [math.log(o[2, i] / o[0, i]) for i in index]
        mean = math.fsum(ratios) / len(ratios)
        std = math.sqrt(math.fsum((r - mean) ** 2 for r in ratios) / len(ratios))
        return [math.exp(mean), mean, std]

    got = F.relative_performance_intervals(o[2].log(), o[0].log(), resamples=RESAMPLES)
    low, high = loop_bca(o.shape[1], statistic)
    for k, interval in enumerate(got):
        assert float(interval.low) == pytest.approx(low[k], rel=1e-12, abs=1e-15)
        assert float(interval.high) == pytest.approx(high[k], rel=1e-12, abs=1e-15)


def test_percentile_method_equals_an_explicit_loop() -> None:
    _, o = scores()
    log_ratio = (o[2] / o[0]).log()
    got = intervals.paired_bootstrap(
        log_ratio, lambda s: s.mean(axis=1), resamples=RESAMPLES, method="percentile"
    )
    stats = [[math.fsum(log_ratio[index].tolist()) / len(index)] for index in draws(len(o[0]))]
    low, high = explicit_percentiles(stats)
    assert float(got.low[0]) == pytest.approx(low[0], rel=1e-12)
    assert float(got.high[0]) == pytest.approx(high[0], rel=1e-12)


def scipy_bca(data: tuple[np.ndarray, ...], statistic: Callable, distribution: np.ndarray):
    """scipy's BCa ends given our resampled statistics (``n_resamples=0`` reuses them)."""
    stats = pytest.importorskip("scipy.stats")

    class Previous:
        bootstrap_distribution = distribution

    return stats.bootstrap(
        data,
        statistic,
        n_resamples=0,
        bootstrap_result=Previous(),
        paired=len(data) > 1,
        method="BCa",
        confidence_level=0.95,
    ).confidence_interval


@pytest.mark.parametrize("images", [8, 25, 200])
def test_bca_equals_scipy_given_the_same_resamples(images: int) -> None:
    generator = np.random.default_rng(images)
    x = generator.lognormal(size=images)  # skewed: BCa moves the ends away from percentile's
    got = intervals.paired_bootstrap(x, lambda s: s.mean(axis=1), resamples=1000, seed=2)
    distribution = np.array([x[i].mean() for i in draws(images, seed=2, resamples=1000)])
    expected = scipy_bca((x,), np.mean, distribution)
    assert float(got.low[0]) == pytest.approx(expected.low, rel=1e-12)
    assert float(got.high[0]) == pytest.approx(expected.high, rel=1e-12)


def test_bca_equals_scipy_on_a_paired_ratio() -> None:
    # relative performance: exp(mean log(O'/O)), the two methods resampled together
    _, o = scores(images=30)
    new, base = o[2].log().numpy(), o[0].log().numpy()
    got = F.relative_performance_intervals(
        torch.from_numpy(new), torch.from_numpy(base), resamples=800
    )
    distribution = np.array([np.exp((new[i] - base[i]).mean()) for i in draws(30, resamples=800)])

    def ratio(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.exp((a - b).mean(axis=axis))

    expected = scipy_bca((new, base), ratio, distribution)
    assert float(got.geometric_mean.low) == pytest.approx(expected.low, rel=1e-12)
    assert float(got.geometric_mean.high) == pytest.approx(expected.high, rel=1e-12)


def test_bca_corrects_the_percentile_interval_of_a_skewed_mean() -> None:
    # lognormal values: the mean's sampling distribution is skewed right, so BCa's ends both
    # lie above the percentile interval's (Efron & Tibshirani, section 14.3)
    x = np.random.default_rng(0).lognormal(size=40)
    bca = intervals.paired_bootstrap(x, lambda s: s.mean(axis=1))
    percentile = intervals.paired_bootstrap(x, lambda s: s.mean(axis=1), method="percentile")
    assert bca.low[0] > percentile.low[0] and bca.high[0] > percentile.high[0]


def test_one_image_has_no_interval() -> None:
    got = intervals.paired_bootstrap(np.array([[0.3, 0.7]]), lambda s: s.mean(axis=1))
    assert torch.isnan(got.low).all() and torch.isnan(got.high).all()
    rp = F.relative_performance_intervals(torch.tensor([-0.1]), torch.tensor([-0.2]))
    assert math.isnan(float(rp.geometric_mean.low))


def test_quantiles_and_leave_one_out_indices() -> None:
    distribution = np.random.default_rng(1).normal(size=(2, 101, 3))
    p = np.array([[0.025, 0.5, 0.975], [0.1, 0.333, 1.0]])
    got = intervals.quantiles(distribution, p)
    for m in range(2):
        for j in range(3):
            expected = explicit_quantile(distribution[m, :, j].tolist(), float(p[m, j]))
            assert got[m, j] == pytest.approx(expected, rel=1e-13)
    rows = np.concatenate(list(intervals.leave_one_out_indices(5, chunk=2)))
    assert rows.tolist() == [[j for j in range(5) if j != i] for i in range(5)]
    with pytest.raises(ValueError, match="two images"):
        next(intervals.leave_one_out_indices(1))


def test_compare_pair_counts_ties_and_equals_an_explicit_loop() -> None:
    _, o = scores()
    first, second = o[1].clone(), o[0]
    first[5] = second[5] * (1 + 5e-5)  # within the tolerance 1e-4: a tie
    got = F.compare_pair(first, second, resamples=RESAMPLES)
    won = [bool(a > b * (1 + 1e-4)) for a, b in zip(first.tolist(), second.tolist(), strict=True)]
    lost = [bool(b > a * (1 + 1e-4)) for a, b in zip(first.tolist(), second.tolist(), strict=True)]
    tied = [not (w or x) for w, x in zip(won, lost, strict=True)]
    assert (got.images_won, got.images_tied, got.images_lost) == (sum(won), sum(tied), sum(lost))
    assert got.images_tied == 6
    assert float(got.wins + got.ties + got.losses) == pytest.approx(100.0)
    low, high = loop_bca(len(won), lambda index: [100 * sum(won[i] for i in index) / len(index)])
    assert float(got.wins_interval.low) == pytest.approx(low[0])
    assert float(got.wins_interval.high) == pytest.approx(high[0])
    assert got.p_value == pytest.approx(hand_sign_test(sum(won), sum(lost)))


def hand_sign_test(wins: int, losses: int) -> float:
    n = wins + losses
    k = min(wins, losses)
    tail = sum(Fraction(math.comb(n, i), 2**n) for i in range(k + 1))
    return float(min(Fraction(1), 2 * tail))


def test_sign_test_by_hand() -> None:
    # 9 wins, 1 loss: 2 * (1 + 10) / 1024
    assert intervals.sign_test(9, 1) == pytest.approx(22 / 1024)
    assert intervals.sign_test(1, 9) == intervals.sign_test(9, 1)
    assert intervals.sign_test(0, 0) == 1.0
    assert intervals.sign_test(5, 5) == 1.0
    assert intervals.sign_test(0, 6) == pytest.approx(2 / 64)
    assert intervals.sign_test(700, 300) == pytest.approx(hand_sign_test(700, 300), rel=1e-9)
    assert 0 < intervals.sign_test(700, 300) < 1e-30
    with pytest.raises(ValueError, match="non-negative"):
        intervals.sign_test(-1, 3)


def test_sign_test_equals_exact_integers_for_every_small_split() -> None:
    for n in range(0, 61):
        for wins in range(n + 1):
            exact = hand_sign_test(wins, n - wins)
            assert intervals.sign_test(wins, n - wins) == pytest.approx(exact, rel=1e-12, abs=0)


@pytest.mark.parametrize(
    ("wins", "losses"),
    [
        (25_000, 25_000),  # balanced: p = 1
        (24_999, 25_001),
        (24_800, 25_200),  # p near 0.07
        (24_000, 26_000),  # p near 1e-19
        (22_000, 28_000),  # p near 6e-159
        (1, 49_999),  # extreme: p near 1e-15000 underflows to 0
        (0, 50_000),
        (3, 7),
        (1_000, 1_100),
    ],
)
def test_sign_test_equals_scipy_at_any_size(wins: int, losses: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    expected = stats.binomtest(wins, wins + losses, 0.5).pvalue
    got = intervals.sign_test(wins, losses)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert intervals.sign_test(losses, wins) == got


def test_constant_values_give_zero_width_intervals() -> None:
    y = torch.full((25,), 0.8, dtype=torch.float64)
    o = torch.tensor([[0.4] * 25, [0.6] * 25], dtype=torch.float64)
    got = F.score_intervals(y, o, resamples=RESAMPLES)
    torch.testing.assert_close(got.average_drop.low, torch.tensor([50.0, 25.0]).double())
    torch.testing.assert_close(got.average_drop.high, got.average_drop.low)
    assert got.win_percentage is not None
    assert got.win_percentage.low.tolist() == [0.0, 100.0] == got.win_percentage.high.tolist()
    rp = F.relative_performance_intervals(o[1].log(), o[0].log(), resamples=RESAMPLES)
    assert float(rp.geometric_mean.low) == pytest.approx(1.5)
    assert float(rp.geometric_mean.high) == pytest.approx(1.5)
    assert float(rp.log_std.high) == pytest.approx(0.0, abs=1e-15)


def test_identical_methods_give_exactly_one() -> None:
    _, o = scores()
    rp = F.relative_performance_intervals(o[0].log(), o[0].log(), resamples=RESAMPLES)
    assert [float(v) for v in rp.geometric_mean] == [1.0, 1.0]
    assert [float(v) for v in (*rp.log_mean, *rp.log_std)] == [0.0] * 4
    pair = F.compare_pair(o[0], o[0], resamples=RESAMPLES)
    assert (pair.images_tied, float(pair.ties), pair.p_value) == (o.shape[1], 100.0, 1.0)


def test_the_draws_are_paired() -> None:
    # A method equal to another times a per-image constant c: paired resamples give a ratio of
    # exactly c in every resample; unpaired ones would spread it.
    _, o = scores(images=60)
    rp = F.relative_performance_intervals(o[0].log() + 0.25, o[0].log(), resamples=RESAMPLES)
    assert float(rp.geometric_mean.low) == pytest.approx(math.exp(0.25), rel=1e-12)
    assert float(rp.geometric_mean.high) == pytest.approx(math.exp(0.25), rel=1e-12)
    # the same seed draws the same images for every call and whatever the chunk size
    whole = np.concatenate(list(intervals.resample_indices(60, 50, seed=7)))
    chunks = np.concatenate(list(intervals.resample_indices(60, 50, seed=7, chunk=7)))
    np.testing.assert_array_equal(whole, chunks)
    other = np.concatenate(list(intervals.resample_indices(60, 50, seed=8)))
    assert not np.array_equal(whole, other)


def test_chunking_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    y, o = scores()
    whole = F.score_intervals(y, o, resamples=RESAMPLES)
    monkeypatch.setattr(intervals, "CHUNK_ELEMENTS", 100)  # a few resamples per chunk
    chunked = F.score_intervals(y, o, resamples=RESAMPLES)
    for a, b in zip(whole, chunked, strict=True):
        assert torch.equal(a.low, b.low) and torch.equal(a.high, b.high)


def test_bootstrap_errors() -> None:
    with pytest.raises(ValueError, match="NaN"):
        intervals.paired_bootstrap(torch.tensor([1.0, math.nan]), lambda s: s.mean(axis=1))
    with pytest.raises(ValueError, match="level"):
        intervals.paired_bootstrap(torch.ones(3), lambda s: s.mean(axis=1), level=1.0)
    with pytest.raises(ValueError, match="at least one image"):
        intervals.paired_bootstrap(torch.ones(0), lambda s: s.mean(axis=1))
    with pytest.raises(ValueError, match="bca, percentile"):
        intervals.paired_bootstrap(torch.ones(3), lambda s: s.mean(axis=1), method="t")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tolerance|rtol"):
        F.compare_pair(torch.ones(3), torch.ones(3), rtol=-1.0)


# --- digits
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "shown"),
    [
        ((1.2345, 1.1934, 1.2871), {}, "1.234 [1.193, 1.287]"),  # half-width 0.047
        ((45.678, 40.1, 51.3), {}, "45.7 [40.1, 51.3]"),  # half-width 5.6
        ((1234.5, 1000.0, 1500.0), {}, "1230 [1000, 1500]"),  # half-width 250: tens
        ((-0.001, -0.3, 0.2), {}, "0.00 [-0.30, 0.20]"),  # no negative zero
        ((12.3, 12.3, 12.3), {}, "12.3 (no spread)"),  # zero width: no interval, not certainty
        ((100.0, 100.0, 100.0), {}, "100 (no spread)"),  # nine images won out of nine
        # a ratio of 1.00034 with a zero-width interval: not "1 [1, 1]"
        ((1.00034, 1.00034, 1.00034), {"reference": 1.0}, "1.0003 (no spread)"),
        # an end just above 1 never prints as 1: the interval excludes it
        ((1.062, 1.00001, 1.127), {"reference": 1.0}, "1.062 [1.00001, 1.127]"),
        ((0.1, -0.00003, 0.2), {"reference": 0.0}, "0.10 [-0.00003, 0.20]"),
        ((1.0, 0.9, 1.1), {"reference": 1.0}, "1.00 [0.90, 1.10]"),  # exactly 1 may print as 1
        ((0.4321, math.nan, math.nan), {}, "0.4321"),  # no interval (one image; withheld)
        ((1.00034,), {"reference": 1.0}, "1.0003"),
        ((8.248e-08, -1e-7, 3e-7), {"reference": 0.0}, "equal (0)"),  # float32 noise
        ((1.0000003, 0.9999998, 1.0000009), {"reference": 1.0}, "equal (1)"),
        ((1.24, 1.2, 1.28), {"reference": 1.0}, "1.240 [1.200, 1.280]"),  # half-width 0.04
        ((0.123456,), {}, "0.1235"),
    ],
)
def test_format_estimate(args: tuple[float, ...], kwargs: dict, shown: str) -> None:
    assert format_estimate(*args, **kwargs) == shown


def test_decimals_and_errors() -> None:
    assert [decimals(h) for h in (0.047, 0.5, 5.0, 250.0, 1e-7)] == [3, 2, 1, -1, 8]
    with pytest.raises(ValueError, match="positive"):
        decimals(0.0)
    with pytest.raises(ValueError, match="wrong way"):
        format_estimate(1.0, 2.0, 0.0)
    with pytest.raises(ValueError, match="both ends"):
        format_estimate(1.0, 0.5)
    with pytest.raises(ValueError, match="NaN, the other not"):
        format_estimate(1.0, math.nan, 2.0)


def test_with_intervals_merges_the_bounding_columns() -> None:
    rows = [
        {
            "methods": "B vs A",
            "relative performance": 1.0000001,
            "relative performance ci low": 0.9999999,
            "relative performance ci high": 1.0000004,
            "log mean": 0.2,
            "log mean ci low": 0.1,
            "log mean ci high": 0.3,
            "images": 9,
        }
    ]
    assert with_intervals(rows) == [
        {
            "methods": "B vs A",
            "relative performance": "equal (1)",
            "log mean": "0.20 [0.10, 0.30]",
            "images": 9,
        }
    ]


# --- EvaluationResult
# ---------------------------------------------------------------------------


def _small_result(images: int, methods: int = 3) -> EvaluationResult:
    y, o = scores(methods=methods, images=images)
    names = ["A", "B", "C"][:methods]
    return EvaluationResult(
        methods=names,
        maps_from=["pre-softmax"],
        index=torch.arange(images),
        target=torch.zeros(images, dtype=torch.long),
        y=y,
        log_y=y.log(),
        o={"pre-softmax": {n: o[k] for k, n in enumerate(names)}},
        log_o={"pre-softmax": {n: o[k].log() for k, n in enumerate(names)}},
        dead_zone=None,
        threshold=None,
        images_seen=images,
    )


def test_result_tables_carry_the_intervals_after_each_column() -> None:
    result = _small_result(30)
    y, o = result.y, torch.stack([result.o["pre-softmax"][n] for n in result.methods])
    rows = result.summary(intervals=True, seed=4, resamples=RESAMPLES)
    assert list(rows[0])[3:6] == ["average drop", "average drop ci low", "average drop ci high"]
    expected = F.score_intervals(y, o, seed=4, resamples=RESAMPLES)
    for k, row in enumerate(rows):
        assert row["win percentage ci low"] == float(expected.win_percentage.low[k])
        assert row["average drop ci high"] == float(expected.average_drop.high[k])
    assert result.summary()[0].keys() == {
        "maps", "method", "images", "average drop", "increase in confidence", "win percentage"
    }  # fmt: skip
    relative = result.relative_performance(intervals=True, seed=4, resamples=RESAMPLES)
    assert [r["methods"] for r in relative] == ["B vs A", "C vs A", "C vs B"]
    log_o = result.log_o["pre-softmax"]
    bounds = F.relative_performance_intervals(log_o["C"], log_o["B"], seed=4, resamples=RESAMPLES)
    assert relative[2]["log mean ci low"] == float(bounds.log_mean.low)
    if intervals.coverage("log std", 30).shown:
        assert relative[2]["log std ci low"] == float(bounds.log_std.low)
    else:  # withheld: its coverage does not hold at 30 images
        assert math.isnan(relative[2]["log std ci low"])
    pairwise = result.pairwise(seed=4, resamples=RESAMPLES)
    assert pairwise[0]["images tied"] == 5  # the five images where B equals A
    assert pairwise[0]["images won"] + pairwise[0]["images lost"] == 25
    text = result.format(intervals=True)
    assert "pairwise" in text and " [" in text


# --- coverage: what the intervals can say at N images
# ------------------------------------------------------------------------------------


def test_coverage_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(intervals.COVERAGE_FROM, "mean", 20)
    monkeypatch.setitem(intervals.COVERAGE_FROM, "log std", None)
    assert intervals.coverage("mean", 20) == (True, False)
    assert intervals.coverage("mean", 9) == (True, True)  # approximate
    assert intervals.coverage("mean", 1) == (False, False)  # no interval at one image
    assert intervals.coverage("log std", 10_000) == (False, False)  # withheld: never holds
    monkeypatch.setitem(intervals.COVERAGE_FROM, "log std", 100)
    assert intervals.coverage("log std", 100) == (True, False)
    assert intervals.coverage("log std", 99) == (False, False)
    with pytest.raises(ValueError, match="geometric mean"):
        intervals.coverage("median", 10)


def test_tables_withhold_log_std_and_say_what_intervals_are_approximate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for statistic in intervals.COVERAGE_FROM:
        monkeypatch.setitem(intervals.COVERAGE_FROM, statistic, 20)
    monkeypatch.setitem(intervals.COVERAGE_FROM, "log std", 100)
    nine = _small_result(9).tables(resamples=RESAMPLES)
    relative = nine.relative_performance
    assert relative is not None
    assert all(
        math.isnan(r["log std ci low"]) and math.isnan(r["log std ci high"]) for r in relative.rows
    )
    assert all(r["log mean ci low"] < r["log mean ci high"] for r in relative.rows)
    text = relative.text()
    assert "log std: no interval, as the bootstrap covers a standard deviation" in text
    assert "far less often than 95 % at 9 images" in text
    assert "approximate at 9 images" in text and "from 20 images" in text
    assert "approximate at 9 images" in nine.scores.text()
    assert "n/a" not in text  # the log std is shown, without its interval
    thirty = _small_result(30).tables(resamples=RESAMPLES)
    assert thirty.relative_performance is not None
    assert "approximate" not in thirty.text()  # coverage holds from 20 images
    assert "95 % at 30 images" in thirty.text()
    monkeypatch.setitem(intervals.COVERAGE_FROM, "mean", None)
    never = _small_result(30).tables(resamples=RESAMPLES).text()
    assert (
        "intervals of log mean: approximate at 30 images; their 95 % coverage holds at no " in never
    )
    hundred = _small_result(100).relative_performance(intervals=True, resamples=RESAMPLES)
    assert all(r["log std ci low"] < r["log std ci high"] for r in hundred)


def test_one_image_has_no_interval_in_any_table() -> None:
    tables = _small_result(1).tables(resamples=RESAMPLES)
    for table in tables.all():
        bounds = [
            v for row in table.rows for k, v in row.items() if k.endswith((" ci low", " ci high"))
        ]
        assert bounds and all(math.isnan(v) for v in bounds)
        assert table.caveats == ("no intervals: one image says nothing about the spread",)
        assert " [" not in table.text()


def test_an_interval_without_spread_is_not_shown_as_certainty() -> None:
    result = _small_result(9, methods=2)
    result.o["pre-softmax"]["B"] = result.o["pre-softmax"]["A"] * 2  # B wins every image
    result.log_o["pre-softmax"]["B"] = result.log_o["pre-softmax"]["A"] + math.log(2)
    tables = result.tables(resamples=RESAMPLES)
    text = tables.scores.text()
    assert "100 (no spread)" in text and "[100, 100]" not in text
    assert "every one of the 9 images gave the same value" in text
    assert "that is not certainty" in text
    assert tables.pairwise is not None and "100 (no spread)" in tables.pairwise.text()
    assert tables.scores.csv_rows()[1]["win percentage ci low"] == 100.0  # files keep the ends
