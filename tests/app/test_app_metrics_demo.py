"""The demo: its quantus.evaluate table and its command.

Papers (full references in the README): Lerma & Lucas (2022), arXiv:2205.10838.
"""

from __future__ import annotations

import math

import pytest
import torch

from camplus_app import metrics_demo as demo


def test_quantus_table_of_the_walled_cnn() -> None:
    torch.manual_seed(0)
    model = demo.walled_cnn().eval()  # untrained: the wall alone makes HiResCAM's dead zone empty
    images, labels = demo.synthetic_images(4, torch.Generator().manual_seed(0))
    table = demo.quantus_table(model, images, labels, threshold=None)
    assert list(table.columns) == demo.METHODS
    assert list(table.index) == [
        "Average Drop %",
        "Increase in Confidence %",
        "Win %",
        "Relative Performance vs Grad-CAM",
        "Dead Zone Mass",
    ]
    assert table.loc["Dead Zone Mass", "HiResCAM"] == 0.0
    assert table.loc["Dead Zone Mass", "Grad-CAM"] > 0.0
    assert table.loc["Relative Performance vs Grad-CAM", "Grad-CAM"] == pytest.approx(1.0)
    assert sum(table.loc["Win %"]) == pytest.approx(100.0)
    assert all(math.isfinite(v) for v in table.to_numpy().ravel())


@pytest.mark.slow  # trains the small CNN for a few seconds
def test_demo_command(capsys: pytest.CaptureFixture[str]) -> None:
    demo.main(["--images", "8"])
    out = capsys.readouterr().out
    assert "test accuracy" in out and "quantus.evaluate" in out
    assert "relative performance (Lerma & Lucas, tables 1-2)" in out
    assert "HiResCAM vs Grad-CAM++" in out
