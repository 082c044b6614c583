"""Metrics the scores leave undefined (average drop and relative performance of raw outputs)
are n/a with a reason, decided by the kind of scores; nothing that reports a result raises."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from metrics import functional as F
from metrics.records import NoImageAboveThreshold, evaluation_result
from metrics.result import EvaluationResult, undefined_metrics
from metrics.tables import Table, not_available

RESAMPLES = 200
METHODS = ["A", "B", "C"]


def raw_result(scores: str = "raw") -> EvaluationResult:
    """Logits of both signs, so no relative drop and no ratio O'/O exists; each method's O is
    set apart by construction (no ties that depend on luck)."""
    generator = torch.Generator().manual_seed(0)
    y = torch.randn(12, generator=generator, dtype=torch.float64) * 3
    o = {m: y + k - 1 + 0.1 * torch.randn(12, generator=generator) for k, m in enumerate(METHODS)}
    per = {"pre-softmax": o}
    records = [
        {
            "position": i,
            "target": 0,
            "Y": float(y[i]),
            "log Y": math.log(y[i]) if y[i] > 0 else math.nan,
            "kept": True,
            "O": {"pre-softmax": {m: float(per["pre-softmax"][m][i]) for m in METHODS}},
            "log O": {
                "pre-softmax": {
                    m: math.log(v) if (v := float(o[m][i])) > 0 else math.nan for m in METHODS
                }
            },
        }
        for i in range(12)
    ]
    return evaluation_result(records, METHODS, ["pre-softmax"], scores=scores)  # type: ignore[arg-type]


def test_the_kind_of_scores_decides_what_is_defined() -> None:
    assert undefined_metrics("softmax") == {} == undefined_metrics("sigmoid")
    raw = undefined_metrics("raw")
    assert set(raw) == {"average drop", "relative performance"}
    assert all("positive scores" in reason for reason in raw.values())
    with pytest.raises(ValueError, match="scores must be one of"):
        undefined_metrics("logits")  # type: ignore[arg-type]


def test_raw_scores_report_undefined_metrics_as_nan_and_never_raise() -> None:
    result = raw_result()
    assert result.scores == "raw" and bool((result.y < 0).any())
    rows = result.summary(intervals=True, resamples=RESAMPLES)
    for row in rows:
        assert math.isnan(row["average drop"]) and math.isnan(row["average drop ci low"])
        assert 0 <= row["increase in confidence"] <= 100
    # C's O is above B's and B's above A's on every image: win % and pairs are defined
    assert [row["win percentage"] for row in rows] == [0.0, 0.0, 100.0]
    assert rows[0]["increase in confidence"] == 0.0 and rows[2]["increase in confidence"] == 100
    relative = result.relative_performance(intervals=True, resamples=RESAMPLES)
    assert all(math.isnan(value) for row in relative for value in list(row.values())[2:])
    pairs = result.pairwise(resamples=RESAMPLES)
    assert [p["images won"] for p in pairs] == [12, 12, 12]
    assert all(p["sign test p"] == pytest.approx(2 / 4096) for p in pairs)
    assert all(math.isnan(row["drop %"]) for row in result.image_rows())
    assert result.relative_performance_per_image() == {"pre-softmax": {}}
    text = str(result)
    assert "raw outputs" in text and "n/a" in text
    assert "average drop: n/a under raw scores" in text
    assert "relative performance, log mean, log std: n/a under raw scores" in text
    assert "n/a" in result.format(intervals=True)


def test_tables_say_why_a_value_is_not_available() -> None:
    tables = raw_result().tables(resamples=RESAMPLES)
    scores = tables.scores.csv_rows()
    assert scores[0]["average drop"] == "n/a" == scores[0]["average drop ci high"]
    assert scores[0]["note"].startswith("average drop: n/a under raw scores")
    assert isinstance(scores[0]["increase in confidence"], float)
    assert tables.relative_performance is not None and tables.pairwise is not None
    assert tables.relative_performance.csv_rows()[0]["relative performance"] == "n/a"
    assert "note" not in tables.pairwise.csv_rows()[0]
    markdown = tables.scores.text(markdown=True)
    assert "| n/a" in markdown and "\n- average drop: n/a" in markdown


def test_softmax_tables_have_no_notes_and_one_method_says_why_win_is_missing() -> None:
    positive = EvaluationResult(
        methods=["A"],
        maps_from=["pre-softmax"],
        index=torch.arange(3),
        target=torch.zeros(3, dtype=torch.long),
        y=torch.tensor([0.5, 0.6, 0.7], dtype=torch.float64),
        log_y=torch.tensor([0.5, 0.6, 0.7], dtype=torch.float64).log(),
        o={"pre-softmax": {"A": torch.tensor([0.4, 0.7, 0.7], dtype=torch.float64)}},
        log_o={"pre-softmax": {"A": torch.tensor([0.4, 0.7, 0.7], dtype=torch.float64).log()}},
        dead_zone=None,
        threshold=None,
        images_seen=3,
    )
    tables = positive.tables(resamples=RESAMPLES)
    assert tables.relative_performance is None and tables.pairwise is None
    assert tables.scores.notes == ("win percentage: n/a, as it compares two or more methods",)
    row = tables.scores.rows[0]
    assert row["average drop"] == pytest.approx(100 / 3 * (0.1 / 0.5))
    assert tables.scores.csv_rows()[0]["win percentage"] == "n/a"


def test_the_scores_are_held_once() -> None:
    fields = {f.name for f in EvaluationResult.__dataclass_fields__.values()}
    assert "scores" in fields and "softmax" not in fields
    assert "softmax" not in inspect.signature(evaluation_result).parameters
    with pytest.raises(ValueError, match="scores must be one of"):
        raw_result("logits")


def test_no_image_above_the_threshold_has_its_own_exception() -> None:
    record = {"position": 0, "target": 0, "Y": 0.1, "log Y": math.log(0.1), "kept": False}
    with pytest.raises(NoImageAboveThreshold, match="above the threshold 0.5"):
        evaluation_result([record], METHODS, ["pre-softmax"], threshold=0.5)
    with pytest.raises(ValueError, match="holds no images") as error:
        evaluation_result([], METHODS, ["pre-softmax"])
    assert not isinstance(error.value, NoImageAboveThreshold)


def test_one_tie_tolerance_is_every_default() -> None:
    assert F.TIE_RTOL == 1e-4
    defaults = [
        inspect.signature(F.win_percentage).parameters["rtol"].default,
        inspect.signature(F.score_intervals).parameters["rtol"].default,
        inspect.signature(F.compare_pair).parameters["rtol"].default,
        inspect.signature(EvaluationResult.summary).parameters["win_rtol"].default,
        inspect.signature(EvaluationResult.pairwise).parameters["win_rtol"].default,
        inspect.signature(EvaluationResult.tables).parameters["win_rtol"].default,
    ]
    quantus_metrics = pytest.importorskip("metrics.quantus_metrics")
    defaults.append(inspect.signature(quantus_metrics.WinPercentage).parameters["rtol"].default)
    assert all(default is F.TIE_RTOL for default in defaults)


def test_not_available_leaves_numbers_alone() -> None:
    rows = not_available([{"a": math.nan, "b": 1.5, "c": "x", "d": 3}])
    assert rows == [{"a": "n/a", "b": 1.5, "c": "x", "d": 3}]
    assert Table("t", [{"a": 1.0}]).csv_rows() == [{"a": 1.0}]
