"""Why :data:`captum_camplus.modules.CPU_FORWARD_BYTES` is 8 images of 224 x 224: the time per
image of the bundled EfficientNet-Lite0's forward at several batch sizes on a CPU, and
:func:`metrics.class_scores` on one batch of perturbed images (what each deletion, insertion or
ROAD step of ``camplus compare --metrics all`` runs: 8 maps x 8 images) in chunks of
``CPU_FORWARD_BYTES`` against one forward.

Times are medians of ``--repeats`` calls, as ratios to the first row in the same run.

Rerun: ``PYTHONPATH=$PWD .venv/bin/python -m benchmarks.forward_chunks --threads 1``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from unittest import mock

import torch

from benchmarks.road_cost import median_time
from camplus_app.zoo import efficientnet_lite0
from metrics import confidence

BATCHES = (8, 16, 32, 64)


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    """:func:`benchmarks.road_cost.median_time` after one warm-up call."""
    run()
    return median_time(run, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = efficientnet_lite0().model
    images = torch.rand(max(BATCHES), 3, 224, 224, generator=torch.Generator().manual_seed(0))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print("| forward of | ms per image | x the first row |\n|---|---:|---:|")
    first = None
    with torch.no_grad():
        for batch in BATCHES:
            per_image = median_seconds(lambda b=batch: model(images[:b]), args.repeats) / batch
            first = first or per_image
            print(f"| {batch} images | {per_image * 1e3:.1f} | {per_image / first:.2f} |")
    target = torch.zeros(len(images), dtype=torch.long)
    print(f"\n| class_scores of {len(images)} images | ms per image | x the first row |")
    print("|---|---:|---:|")
    first = None
    for chunk in (confidence.cpu_forward_rows(images[0].numel() * 4), len(images)):
        with mock.patch.object(confidence, "cpu_forward_rows", lambda _, rows=chunk: rows):
            seconds = median_seconds(
                lambda: confidence.class_scores(model, images, target), args.repeats
            )
        per_image = seconds / len(images)
        first = first or per_image
        print(f"| chunks of {chunk} | {per_image * 1e3:.1f} | {per_image / first:.2f} |")


if __name__ == "__main__":
    main()
