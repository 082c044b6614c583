"""What ``camplus compare`` costs on a data set.

1. Passes per image (counted by hooks) and the time of one batch against the sum of its passes
   timed alone, on the bundled EfficientNet-Lite0 (in-process);
2. images/s and peak memory of whole runs of the command on data sets of any size, in a
   subprocess each, with one process or several under ``torchrun``.

    python -m benchmarks.make_dataset /tmp/ds100 --images 100
    python -m benchmarks.make_dataset /tmp/ds1000 --images 1000
    python -m benchmarks.compare --passes --data /tmp/ds100 --data /tmp/ds1000 \\
        --torchrun /tmp/ds100 --json benchmarks/results/compare-cpu.json

The runs score every image (no ``--threshold``: each costs the full 1 forward, 2 backwards and
2M forwards), with ``OMP_NUM_THREADS=1`` per process and one DataLoader worker per process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.meters import proc_memory_kib

MIB = 2**20


# --------------------------------------------------------------------------- passes


def passes(batch: int, rounds: int) -> dict[str, Any]:
    """Count the passes of one :class:`metrics.BatchScorer` call and time it against its passes.

    Timed alone, interleaved in random order each round: the forward that keeps the layer (with
    the graph), each backward to the layer (on a fresh forward's graph, the backward alone
    timed), and the no-gradient forward of a batch of explanation maps (one per method and kind
    of map: 2M). The ratio is the median batch time over the sum of the passes' medians.
    """
    from camplus_app.images import sample_images
    from camplus_app.zoo import efficientnet_lite0
    from metrics import BatchScorer
    from metrics.heatmaps import layer_gradient, layer_pass

    clf = efficientnet_lite0()
    photos = list(sample_images().values())
    x = clf.preprocess([photos[i % len(photos)] for i in range(batch)])
    with torch.no_grad():
        target = clf.model(x).argmax(dim=1)
    scorer = BatchScorer(clf.model, clf.layer)
    methods = len(scorer.names)
    counts = _count_passes(clf, lambda: scorer(x, target))

    def forward_with_layer() -> None:
        layer_pass(clf.model, clf.layer, x)

    def backward(source: str) -> Callable[[], float]:
        def timed() -> float:
            passed = layer_pass(clf.model, clf.layer, x)
            start = time.perf_counter()
            layer_gradient(passed, target, source)  # type: ignore[arg-type]
            return time.perf_counter() - start

        return timed

    def explanation_forward() -> None:
        with torch.no_grad():
            clf.model(x)

    timers: dict[str, Callable[[], float]] = {
        "batch (BatchScorer)": _timer(lambda: scorer(x, target)),
        "forward keeping the layer": _timer(forward_with_layer),
        "backward to the layer, pre-softmax": backward("pre-softmax"),
        "backward to the layer, post-softmax": backward("post-softmax"),
        "forward of explanation maps (no grad)": _timer(explanation_forward),
    }
    times: dict[str, list[float]] = {name: [] for name in timers}
    for timer in timers.values():  # warm-up
        timer()
    for _ in range(rounds):
        order = list(timers)
        random.shuffle(order)
        for name in order:
            times[name].append(timers[name]())
    median = {name: statistics.median(values) for name, values in times.items()}
    fastest = {name: min(values) for name, values in times.items()}

    def sum_of_passes(each: dict[str, float]) -> float:
        return (
            each["forward keeping the layer"]
            + each["backward to the layer, pre-softmax"]
            + each["backward to the layer, post-softmax"]
            + 2 * methods * each["forward of explanation maps (no grad)"]
        )

    parts = sum_of_passes(median)
    return {
        "batch": batch,
        "methods": methods,
        "rounds": rounds,
        "forwards per image": counts["forward images"] / batch,
        "backwards per batch": counts["backwards"],
        "expected forwards per image": 1 + 2 * methods,
        "median ms": {name: 1e3 * value for name, value in median.items()},
        "sum of passes ms": 1e3 * parts,
        "ratio to the sum of passes": median["batch (BatchScorer)"] / parts,
        "ratio of the fastest rounds": fastest["batch (BatchScorer)"] / sum_of_passes(fastest),
        "all ms": {name: [1e3 * v for v in values] for name, values in times.items()},
    }


def _timer(call: Callable[[], object]) -> Callable[[], float]:
    def timed() -> float:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    return timed


def _count_passes(clf: Any, call: Callable[[], object]) -> dict[str, int]:
    """Images through the model's forward, and backwards from its output (a hook on the output
    tensor runs once per backward that starts there)."""
    counts = {"forward images": 0, "backwards": 0}

    def forward(module: Any, args: tuple) -> None:
        counts["forward images"] += args[0].shape[0]

    def backward(grad: torch.Tensor) -> None:
        counts["backwards"] += 1

    def model_output(module: Any, args: tuple, output: torch.Tensor) -> None:
        if output.requires_grad:
            output.register_hook(backward)

    handles = [
        clf.model.register_forward_pre_hook(forward),
        clf.model.register_forward_hook(model_output),
    ]
    try:
        call()
    finally:
        for handle in handles:
            handle.remove()
    return counts


# --------------------------------------------------------------------------- whole runs


def run_command(data: Path, processes: int, workers: int, batch: int) -> dict[str, Any]:
    """One ``camplus compare DATA`` in a subprocess (under ``torchrun`` for several processes),
    with its memory sampled; images/s as the command reports it (scoring only, model loading
    and start-up excluded)."""
    with tempfile.TemporaryDirectory(prefix="camplus-bench-") as tmp:
        out = Path(tmp) / "out"
        command = ["compare", str(data), "-o", str(out), "-q", "--workers", str(workers)]
        command += ["--batch-size", str(batch)]
        if processes > 1:
            launcher = ["-m", "torch.distributed.run", "--standalone"]
            launcher += [f"--nproc_per_node={processes}"]
        else:
            launcher = []
        argv = [sys.executable, *launcher, "-m", "camplus_app", *command]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}
        start = time.perf_counter()
        process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
        memory = _sample_memory(process)
        stderr = process.stderr.read() if process.stderr else ""
        if process.wait() != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{stderr[-3000:]}")
        wall = time.perf_counter() - start
        summary = json.loads((out / "manifest.json").read_text())["summary"]
    return {
        "data": str(data),
        "images": summary["images"],
        "processes": processes,
        "workers per process": workers,
        "batch": batch,
        "images per second": summary["images per second"],
        "scoring seconds": summary["seconds"],
        "wall seconds": wall,
        **memory,
    }


def _sample_memory(process: subprocess.Popen, every: float = 0.2) -> dict[str, float]:
    """Peak RSS: ``VmHWM`` of each process of the run (exact, kept from its last sample) and
    the sum over the whole process tree (workers included), sampled every ``every`` s."""
    high_water: dict[int, int] = {}
    tree_peak = 0
    while process.poll() is None:
        tree = _descendants(process.pid)
        total = 0
        for pid in tree:
            status = proc_memory_kib(pid)
            if status:
                total += status.get("VmRSS", 0)
                high_water[pid] = max(high_water.get(pid, 0), status.get("VmHWM", 0))
        tree_peak = max(tree_peak, total)
        time.sleep(every)
    peak = max(high_water.values(), default=0)
    return {
        "peak RSS of a process MiB": peak * 1024 / MIB,
        "peak RSS of all MiB": tree_peak * 1024 / MIB,
    }


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


# --------------------------------------------------------------------------- report


def markdown(result: dict[str, Any]) -> str:
    lines = []
    if "passes" in result:
        p = result["passes"]
        lines += [
            f"Passes of one batch of {p['batch']} images, {p['methods']} methods, both kinds of "
            f"map: {p['forwards per image']:g} forwards per image (expected 1 + 2M = "
            f"{p['expected forwards per image']}), {p['backwards per batch']} backwards to the "
            "layer per batch.",
            "",
            "| pass | median ms per batch | times per batch |",
            "|---|---|---|",
        ]
        times = {"forward of explanation maps (no grad)": f"{2 * p['methods']}"}
        for name, ms in p["median ms"].items():
            lines.append(f"| {name} | {ms:.1f} | {times.get(name, '1')} |")
        lines += [
            f"| sum of the passes | {p['sum of passes ms']:.1f} | |",
            "",
            f"Batch time / sum of its passes: **{p['ratio to the sum of passes']:.3f}x** "
            f"(medians of {p['rounds']} rounds; {p['ratio of the fastest rounds']:.3f}x from "
            "the fastest round of each).",
            "",
        ]
    if result.get("runs"):
        lines += [
            "| data | images | processes | images/s | peak RSS, one process (MiB) | peak RSS, all "
            "processes (MiB) | wall s |",
            "|---|---|---|---|---|---|---|",
        ]
        for run in result["runs"]:
            lines.append(
                f"| {Path(run['data']).name} | {run['images']} | {run['processes']} | "
                f"{run['images per second']:.3f} | {run['peak RSS of a process MiB']:.0f} | "
                f"{run['peak RSS of all MiB']:.0f} | {run['wall seconds']:.0f} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__)
    parser.add_argument("--passes", action="store_true", help="count and time the passes")
    parser.add_argument("--batch", type=int, default=8, help="batch size (default: 8)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default: 7)")
    parser.add_argument("--data", type=Path, action="append", default=[], help="one process")
    parser.add_argument("--torchrun", type=Path, action="append", default=[], help="2 processes")
    parser.add_argument("--workers", type=int, default=1, help="per process (default: 1)")
    parser.add_argument("--json", type=Path, help="write the results here (and a .md beside)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result: dict[str, Any] = {"torch": torch.__version__, "cpus": os.cpu_count()}
    if args.passes:
        print("timing the passes...", file=sys.stderr, flush=True)
        result["passes"] = passes(args.batch, args.rounds)
    result["runs"] = []
    for data, processes in [(d, 1) for d in args.data] + [(d, 2) for d in args.torchrun]:
        print(f"camplus compare {data} on {processes} process(es)...", file=sys.stderr, flush=True)
        result["runs"].append(run_command(data, processes, args.workers, args.batch))
        if args.json:  # after each run: a long benchmark keeps what it measured
            _save(args.json, result)
    if args.json:
        _save(args.json, result)
    print(markdown(result))
    return 0


def _save(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(result) + "\n")


if __name__ == "__main__":
    sys.exit(main())
