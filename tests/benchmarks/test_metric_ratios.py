"""The cost rows of every metric count the model's passes as the protocols say."""

from __future__ import annotations

from pathlib import Path

import torch
from metrics_models import tiny_setup

from benchmarks.cases import Case
from benchmarks.metric_cost import DEPTH, STEPS, every_metric, model_calls
from metrics import choices
from metrics.perturbation import ROAD_PERCENTILES

METHODS = 4


def test_passes_per_batch_and_images_per_image_of_every_metric() -> None:
    model, images, labels = tiny_setup(n=2, size=16)
    case = Case(model, model.layer, images, labels)
    rows = [model_calls(e.run, case) for e in every_metric()]
    papers, everything, randomisation, compare_randomisation, compare_all = rows
    # the papers' metrics: one CAM pass that gives Y, then O of each method's map
    assert papers == (1 + METHODS, 2 * (1 + METHODS))
    # + one CAM pass, deletion and insertion (STEPS + 1 each) and ROAD MoRF + LeRF, every step
    # one forward of the four methods' maps of both images
    steps = 2 * (STEPS + 1) + 2 * len(ROAD_PERCENTILES)
    assert everything == (papers[0] + 1 + steps, papers[1] + 2 + steps * METHODS * 2)
    # the trained model's maps, then one CAM pass per randomised layer
    assert randomisation == (1 + DEPTH, 2 * (1 + DEPTH))
    # compare's step: the papers' passes, + one pass of the randomised copy for every method
    assert compare_randomisation == (papers[0] + 1, papers[1] + 2)
    # + deletion and insertion at compare's steps and ROAD, the four maps of both images
    steps = 2 * (choices.STEPS + 1) + 2 * len(ROAD_PERCENTILES)
    assert compare_all == (papers[0] + 1 + steps, papers[1] + 2 + steps * METHODS * 2)
    assert torch.equal(case.inputs, images)


def test_the_readme_quotes_the_saved_ratio_table() -> None:
    """benchmarks/README.md quotes every row of the table the script saved, which has the rows
    of compare's step with ``--metrics randomisation`` and ``--metrics all``."""
    root = Path(__file__).resolve().parents[2]
    table = (root / "benchmarks" / "results" / "metric-ratios-cpu.md").read_text()
    readme = (root / "benchmarks" / "README.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("|")]
    for name in ("randomisation", "all"):
        assert any(row.startswith(f"| compare step, --metrics {name} |") for row in rows)
    for row in rows:
        assert row in readme, row
