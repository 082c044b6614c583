"""Smoke run of the wrappers' benchmark: every row there, one forward per call, Grad-CAM equal to
Captum's through each wrapper. No timing is asserted."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("torchvision")
from benchmarks import wrappers  # noqa: E402
from benchmarks.contenders import ALL_FOUR, FLOOR  # noqa: E402

#: The cheap wrappers (the detector's case takes seconds a call on a CPU).
CHEAP = ["SegmentationScores", "SimilarityScores", "OutputSelect"]


def test_quick_run_has_every_row_one_forward_and_captums_grad_cam(tmp_path, capsys) -> None:
    out = tmp_path / "wrappers.json"
    argv = ["--wrappers", *CHEAP, "--batch", "2", "--size", "64", "--rounds", "1"]
    rows = wrappers.main([*argv, "--threads", "1", "--json", str(out)])
    names = [FLOOR, wrappers.OURS, ALL_FOUR, wrappers.CAPTUM]
    assert [(r.wrapper, r.name) for r in rows] == [(w, n) for w in CHEAP for n in names]
    for row in rows:
        assert row.forwards == 1  # one forward of the wrapped model per call, floor included
        assert math.isfinite(row.median_ms) and row.ratio_to_floor > 0
        if row.name == FLOOR:
            assert row.ratio_to_floor == 1 and math.isnan(row.deviation)
        else:  # float32 sums in another order
            assert row.deviation < 1e-5
    saved = json.loads(out.read_text())
    assert saved["settings"]["wrappers"] == CHEAP and len(saved["rows"]) == len(rows)
    table = capsys.readouterr().out
    assert "| SegmentationScores | Grad-CAM |" in table


def test_an_unknown_wrapper_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown wrapper 'Boxes'"):
        wrappers.wrapper_case("Boxes", 1, 32, "cpu", 0)
