"""What confirming a layer layout costs: Grad-CAM under ``layout="auto"`` as a ratio to the floor
(forward + ``autograd.grad`` to the layer), on the benchmark's models and on one whose layout no
attribute states (the locality probe's case), first call and later calls.

Run from the repository root: ``python -m benchmarks.layout_cost [--rounds 7] [--threads 1]``.
Every call builds its object, as a user would; times are medians of ``--rounds`` rounds, each
running every contender once in a shuffled order, so ratios come from the same rounds. "first
call" empties the probe's cache before one call: the probe's one-time cost. Run it against
another checkout (``PYTHONPATH=that/checkout``) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from benchmarks import layout_families as lf
from benchmarks.cases import build_case
from benchmarks.contenders import layer_activation_and_gradient
from captum_camplus import LayerGradCam

try:
    from captum_camplus.layouts import _probe
except ImportError:  # a checkout from before the probe
    _probe = None  # type: ignore[assignment]


def _clear_probe_cache() -> None:
    if _probe is not None:
        _probe._CACHE.clear()


def _twins(size: int) -> tuple[nn.Module, nn.Module, torch.Tensor, list[int]]:
    """Twins-SVT, small dims, random init: its tokens' layout is stated by no attribute."""
    name = "timm Twins-SVT, 64 x 96 (probe-confirmed)"
    model = lf.build(name)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    return model, model.get_submodule(lf.FAMILIES[name].layer), x, lf.TARGET


def _ms(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return 1e3 * (time.perf_counter() - start)


def measure(model, layer, x, target, rounds: int, seed: int = 0) -> dict[str, float]:
    """Median ms of the floor and of Grad-CAM under "auto"; the probe's first call."""

    class Case:  # what layer_activation_and_gradient reads
        pass

    case = Case()
    case.model, case.layer, case.inputs, case.target = model, layer, x, target  # type: ignore[attr-defined]
    contenders: dict[str, Callable[[], object]] = {
        "floor": lambda: layer_activation_and_gradient(case),  # type: ignore[arg-type]
        "auto": lambda: LayerGradCam(model, layer, layout="auto").attribute(x, target=target),
    }
    _clear_probe_cache()
    first = _ms(contenders["auto"])
    for run in contenders.values():
        run()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in contenders}
    order, rng = list(contenders), random.Random(seed)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            times[name].append(_ms(contenders[name]))
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {**medians, "first": first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [
        "| model (batch 2) | layer | floor ms | auto ms | auto / floor | first call / floor |",
        "|---|---|---:|---:|---:|---:|",
    ]
    cases = {}
    for name in ("resnet18", "vit_small"):
        case = build_case(name, batch=2, size=224, device="cpu", seed=0)
        cases[f"{name} 224 (benchmark)"] = (case.model, case.layer, case.inputs, case.target)
    cases["Twins-SVT (small dims) 224, stage 4"] = _twins(224)
    for label, (model, layer, x, target) in cases.items():
        m = measure(model, layer, x, target, args.rounds)
        layer_name = next(n for n, mod in model.named_modules() if mod is layer)
        rows.append(
            f"| {label} | `{layer_name}` | {m['floor']:.1f} | {m['auto']:.1f} | "
            f"{m['auto'] / m['floor']:.3f} | {m['first'] / m['floor']:.2f} |"
        )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
