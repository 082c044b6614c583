"""Cost of a CAM against its floor (one forward, one backward to the layer) and against peers.

Run from the repository root (the peers come with ``pip install -e ".[bench]"``)::

    python -m benchmarks.run --model resnet50 --batch 8 --size 224 --rounds 5
    python -m benchmarks.run --model efficientnet_lite0 --device cuda --json out.json

Every implementation explains the same batch for the same per-example targets at the same
layer, with the same number of threads. What is measured (see ``benchmarks/README.md``):

- time: interleaved rounds (each round runs every implementation once, in a fresh random order),
  the median per implementation, and its ratio to the floor's median from the same rounds;
- peak extra memory of one call over what was resident just before it: CPU RSS high-water
  (reset through ``/proc/self/clear_refs``), by default in a fresh subprocess per
  implementation, or CUDA ``max_memory_allocated``;
- accuracy: the largest deviation of each implementation's layer-resolution map from a float64
  evaluation of its method's formula (Lerma & Lucas, eq. 1-3 and 9, Taimeskhanov et al., definition
  6) on the same inputs.

This module is the command line and the order of the measurements; the pieces: the problem
(:mod:`benchmarks.cases`), the contenders (:mod:`benchmarks.contenders`), the accuracy against
float64 (:mod:`benchmarks.accuracy`), the metric cost (:mod:`benchmarks.metric_cost`), the time
and memory meters (:mod:`benchmarks.meters`) and the report (:mod:`benchmarks.report`).

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD,
  arXiv:2404.01964.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

import captum_camplus.testing.reference as ref
from benchmarks.accuracy import deviations, float64_case, minmax, reference_maps
from benchmarks.cases import Case, build_case, vit_reshape_transform
from benchmarks.contenders import (
    ALL_FOUR,
    FLOOR,
    OURS,
    Implementation,
    implementations,
    layer_activation_and_gradient,
)
from benchmarks.meters import (
    arithmetic_ms,
    clean_up,
    interquartile_range,
    peak_extra_mib,
    peak_extra_mib_isolated,
    proc_memory_kib,
    progress,
    record_times,
    return_freed_memory_to_the_os,
    rss_available,
    time_rounds,
)
from benchmarks.metric_cost import forwards_per_image, metric_evaluations
from benchmarks.report import MetricRow, Row, report, targets


def add_problem_options(parser: argparse.ArgumentParser, batch: int) -> None:
    """The options every benchmark command shares: the batch, the timing and the machine."""
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (median of these)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the rows and settings to this JSON file")


def check_counts(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """``args``, after a usage error for a count below 1."""
    for name in ("batch", "size", "rounds", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    return args


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default="resnet50",
        choices=["resnet50", "efficientnet_lite0", "resnet18", "vit_small"],
    )
    add_problem_options(parser, batch=8)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 round, memory measured in this process instead of one per call",
    )
    parser.add_argument("--csv", type=Path, help="write the rows to this CSV file")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)  # internal: one subprocess
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 1
    return check_counts(parser, args)


def main(argv: Sequence[str] | None = None) -> list[Row]:
    """Run the benchmark; print the table (and write CSV/JSON); return the rows."""
    args = parse_args(argv)
    gc.collect()
    gc.freeze()  # keep the set-up's objects out of every later collection (they cost ~0.5 s)
    try:
        return _benchmark(args, argv)
    finally:
        gc.unfreeze()


def _benchmark(args: argparse.Namespace, argv: Sequence[str] | None) -> list[Row]:
    torch.set_num_threads(args.threads)
    if args.memory_of is not None and not args.device.startswith("cuda"):
        return_freed_memory_to_the_os()  # before anything large exists in this process
    case = build_case(args.model, args.batch, args.size, args.device, args.seed)
    impls, missing = implementations(case)
    gc.collect()
    gc.freeze()

    if args.memory_of is not None:  # the isolated memory measurement of one implementation
        impl = next(i for i in impls if i.name == args.memory_of)
        print(json.dumps({"peak_extra_mib": peak_extra_mib(impl, case)}))
        return []

    rows = {impl.name: Row(impl.name, impl.library) for impl in impls}
    progress(f"accuracy against float64 ({args.model}, batch {args.batch}, {args.size}px)")
    references = reference_maps(
        *map(case.to_grid, layer_activation_and_gradient(float64_case(case)))
    )
    for impl in impls:
        if maps := impl.maps(case):
            rows[impl.name].max_dev_raw, rows[impl.name].max_dev_minmax = deviations(
                maps, references
            )
        clean_up(case)

    isolated = not args.quick and case.inputs.device.type == "cpu"
    child_argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--quick"]
    child_argv += ["--threads", str(args.threads)]
    for impl in impls:
        rows[impl.name].peak_extra_mib = (
            peak_extra_mib_isolated(impl.name, child_argv)
            if isolated
            else peak_extra_mib(impl, case)
        )
        progress(f"memory: {impl.name}: {rows[impl.name].peak_extra_mib:.1f} MiB")

    activation, gradient = layer_activation_and_gradient(case)
    for impl in impls:
        if impl.arithmetic is not None:
            repeats = 3 if args.quick else 21
            rows[impl.name].map_ms = arithmetic_ms(impl, case, activation, gradient, repeats)
    del activation, gradient
    clean_up(case)

    evaluations, not_installed = metric_evaluations()
    metric_rows = {e.name: MetricRow(e.name, e.scores) for e in evaluations}
    for evaluation in evaluations:
        metric_rows[evaluation.name].forwards_per_image = forwards_per_image(evaluation.run, case)
        clean_up(case)

    times = time_rounds([*impls, *evaluations], case, args.rounds, args.seed)
    floor_ms = record_times(rows.values(), times)
    for metric_row in metric_rows.values():
        metric_row.times_ms = times[metric_row.name]
        median_ms = statistics.median(metric_row.times_ms)
        metric_row.ms_per_image = median_ms / len(case.inputs)
        metric_row.ratio_to_floor = median_ms / floor_ms

    results = list(rows.values())
    settings = {
        "model": args.model,
        "batch": args.batch,
        "size": args.size,
        "rounds": args.rounds,
        "device": str(case.inputs.device),
        "threads": args.threads,
        "torch": torch.__version__,
        "memory": "subprocess per implementation" if isolated else "in process",
    }
    checks = targets(results, case.inputs.device.type)
    report(results, list(metric_rows.values()), settings, checks, missing + not_installed, args)
    return results


__all__ = [
    "ALL_FOUR",
    "FLOOR",
    "OURS",
    "Case",
    "Implementation",
    "MetricRow",
    "Row",
    "add_problem_options",
    "build_case",
    "check_counts",
    "deviations",
    "float64_case",
    "interquartile_range",
    "main",
    "minmax",
    "parse_args",
    "peak_extra_mib",
    "proc_memory_kib",
    "ref",
    "reference_maps",
    "return_freed_memory_to_the_os",
    "rss_available",
    "vit_reshape_transform",
]


if __name__ == "__main__":
    main()
