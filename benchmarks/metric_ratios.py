"""The cost of every metric as ratios to the papers' metrics alone, measured in one run.

Run from the repository root: ``python -m benchmarks.metric_ratios [--model resnet18 --batch 8
--size 224 --rounds 5]``. For the papers' metrics alone and with every metric
(:func:`benchmarks.metric_cost.every_metric`, maps included; ``camplus compare``'s batch step
with ``--metrics randomisation`` and ``--metrics all``), it prints the model's passes
per batch, the images through the model per image and the median time per image, each as a
ratio to ``metrics.evaluate_methods`` (the papers' metrics) in the same run and on the same
batch; ``--out`` also saves the table.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks.cases import build_case
from benchmarks.meters import clean_up, time_rounds
from benchmarks.metric_cost import DEPTH, STEPS, every_metric, model_calls
from metrics import choices

PAPERS = "metrics.evaluate_methods"


def ratio_table(model: str, batch: int, size: int, rounds: int, seed: int = 0) -> str:
    """The markdown table of the ratios (see the module)."""
    case = build_case(model, batch, size, "cpu", seed)
    evaluations = every_metric()
    counts = {}
    for evaluation in evaluations:
        counts[evaluation.name] = model_calls(evaluation.run, case)
        clean_up(case)
    times = time_rounds(evaluations, case, rounds, seed)
    ms = {name: statistics.median(values) / batch for name, values in times.items()}
    papers_calls, papers_images = counts[PAPERS]
    lines = [
        f"{model}, batch {batch}, {size} x {size}, CPU, {torch.get_num_threads()} threads, "
        f"median of {rounds} rounds; deletion/insertion {STEPS} steps ({choices.STEPS} in "
        f"the compare steps), ROAD 9 percentiles, randomisation of the top {DEPTH} layers "
        "(in the compare steps: the layers above the CAM layer, one copy per batch).",
        "",
        "| evaluation | passes per batch | x papers | forwards per image | x papers "
        "| ms per image | x papers |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, (calls, images) in counts.items():
        per_image = images / batch
        lines.append(
            f"| {name} | {calls} | {calls / papers_calls:.1f} | {per_image:g} "
            f"| {images / papers_images:.1f} | {ms[name]:.1f} | {ms[name] / ms[PAPERS]:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metric_ratios", description=__doc__)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    table = ratio_table(args.model, args.batch, args.size, args.rounds)
    print(table)
    if args.out is not None:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
