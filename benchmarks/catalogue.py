"""The catalogue's closing table: per method, the deviation from its float64 reference and from
pytorch-grad-cam's and torchcam's layer maps, its lines of code, and its speed (the gradient
family all together against the floor; Score-CAM and Ablation-CAM against pytorch-grad-cam).

    python -m benchmarks.catalogue --batch 2 --size 64 --rounds 3 [--device cuda]

The model is torchvision's resnet18 (random weights, 10 classes) at ``layer4``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import inspect
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torchvision

import captum_camplus.testing.reference as ref
from benchmarks.meters import synchronize
from captum_camplus import (
    DEFAULT_METHODS,
    METHODS,
    LayerAblationCam,
    LayerCams,
    LayerScoreCam,
)

#: Our method -> (pytorch-grad-cam class, our options matching it), (torchcam class, options).
PEERS = {
    "XGrad-CAM": (("XGradCAM", {"eps": 1e-7}), ("XGradCAM", {"eps": 1e-8})),
    "LayerCAM": (("LayerCAM", {}), ("LayerCAM", {})),
    "Element-wise Grad-CAM": (("GradCAMElementWise", {}), None),
    "EigenCAM": (("EigenCAM", {"centred": True}), None),
    "EigenGrad-CAM": (("EigenGradCAM", {"centred": True}), None),
}


def _relative(ours: np.ndarray, theirs: np.ndarray, up_to_sign: bool = False) -> float:
    if up_to_sign:
        theirs = theirs * np.sign((ours * theirs).sum(axis=(1, 2), keepdims=True))
    return float(np.abs(ours - theirs).max() / np.abs(ours).max())


def _np(tensor: torch.Tensor, dtype: type = np.float64) -> np.ndarray:
    """A tensor on any device as a numpy array of ``dtype``."""
    return tensor.detach().cpu().numpy().astype(dtype)


def _lines(cls: type) -> int:
    return len(inspect.getsource(inspect.getmodule(cls)).splitlines())  # type: ignore[arg-type]


def _torchcam_score_cam(model: torch.nn.Module, x: torch.Tensor, target: list[int]) -> np.ndarray:
    """torchcam's Score-CAM at the layer's resolution (its default batch of 32 masked inputs)."""
    import torchcam.methods

    with torchcam.methods.ScoreCAM(model, model.layer4, input_shape=tuple(x.shape[1:])) as tc:
        with torch.no_grad():
            model(x)
        return _np(tc(class_idx=target, normalized=False)[0])


def _perturbation_rows(
    model: torch.nn.Module,
    model64: torch.nn.Module,
    x: torch.Tensor,
    target: list[int],
    targets: list[object],
    A: torch.Tensor,
    g: torch.Tensor,
    args: argparse.Namespace,
) -> list[list[str]]:
    """Score-CAM and Ablation-CAM: deviations, and the time of the same maps of the same batch
    against pytorch-grad-cam's (and torchcam's Score-CAM), the contenders taking turns in each
    round (so the load of a shared machine falls on all of them alike); median of the rounds."""
    import pytorch_grad_cam

    rows = []
    for name, ours, pgc_name, options in (
        ("Score-CAM", LayerScoreCam, "ScoreCAM", {"align_corners": True}),
        ("Ablation-CAM", LayerAblationCam, "AblationCAM", {"ablation_value": None}),
    ):
        method = ours(model, model.layer4, **options)
        cam = _np(method.attribute(x, target=target)[:, 0])
        x64 = x.cpu().double()
        plain = _np(ours(model64, model64.layer4).attribute(x64, target=target)[:, 0])
        formula = ref.score_cam if name == "Score-CAM" else ref.ablation_cam
        reference = formula(model64, model64.layer4, x64, target)[:, 0]
        peer = getattr(pytorch_grad_cam, pgc_name)(model=model, target_layers=[model.layer4])
        theirs = peer.get_cam_image(
            x, model.layer4, targets, _np(A, np.float32), _np(g, np.float32), False
        )
        contenders: dict[str, Callable[[], object]] = {
            "ours": lambda m=method: m.attribute(x, target=target),
            "pytorch-grad-cam": lambda p=peer: p(input_tensor=x, targets=targets),
        }
        vs_tc = "-"
        if name == "Score-CAM":
            relu = ours(model, model.layer4, align_corners=True).attribute(
                x, target=target, relu_attributions=True
            )
            vs_tc = f"{_relative(_np(relu[:, 0]), _torchcam_score_cam(model, x, target)):.1e}"
            contenders["torchcam"] = lambda: _torchcam_score_cam(model, x, target)
            contenders["bare forwards"] = functools.partial(_bare_forwards, model, x, A)
        speed = "-"
        if not args.no_perturbation_timing:
            ms = _interleaved_ms(contenders, args.rounds, x.device)
            speed = "; ".join(
                f"{ms['ours'] / ms[peer_name]:.3f}x {peer_name} ({ms['ours']:.0f} vs "
                f"{ms[peer_name]:.0f} ms)"
                for peer_name in contenders
                if peer_name != "ours"
            )
        peer.__exit__(None, None, None)
        rows.append(
            [
                name,
                f"{_relative(plain, reference):.1e}",
                f"{_relative(cam, theirs):.1e}",
                vs_tc,
                f"{_lines(ours)} (+ {_lines(ours.__mro__[1])} shared)",
                speed,
            ]
        )
    with torch.no_grad():
        dead = float((A.flatten(2).amax(dim=2) <= A.flatten(2).amin(dim=2)).double().mean())
    print(f"constant channels of the layer (one shared blank forward each image): {dead:.1%}")
    return rows


def _bare_forwards(model: torch.nn.Module, x: torch.Tensor, A: torch.Tensor) -> None:
    """The forwards every exact Score-CAM runs, one of the whole model per channel and image,
    batched as pytorch-grad-cam batches them (16 contiguous inputs) with nothing else: no masks
    made, no scores read. Its Score-CAM cannot take less time than this."""
    rows = x.shape[0] * A.shape[1]
    chunk = (x[:1] * 0.5).expand(16, *x.shape[1:]).contiguous()
    with torch.no_grad():
        for start in range(0, rows, 16):
            model(chunk[: min(16, rows - start)])


def _interleaved_ms(
    contenders: dict[str, Callable[[], object]], rounds: int, device: torch.device
) -> dict[str, float]:
    """Median milliseconds per contender, each round running every contender once in turn (an
    accelerator synchronised before the clock stops)."""
    for run in contenders.values():
        run()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            synchronize(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the perturbation timing")
    parser.add_argument(
        "--gradient-rounds", type=int, default=30, help="rounds of the gradient family's timing"
    )
    parser.add_argument("--device", default="cpu", help="where the model and batch run")
    parser.add_argument(
        "--no-perturbation-timing", action="store_true", help="time the gradient family only"
    )
    args = parser.parse_args()
    import pytorch_grad_cam
    import torchcam.methods
    import tqdm

    # pytorch-grad-cam's Score-CAM draws a tqdm bar per chunk: silenced, as ours has none
    tqdm.tqdm.__init__ = functools.partialmethod(tqdm.tqdm.__init__, disable=True)  # type: ignore[method-assign]
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    model64 = copy.deepcopy(model).double()  # the float64 references run on the CPU
    x = torch.randn(args.batch, 3, args.size, args.size)
    model, x = model.to(args.device), x.to(args.device)
    target = [i % 10 for i in range(args.batch)]
    A, g = ref.capture_layer(model, model.layer4, x, target)
    A64, g64 = ref.capture_layer(model64, model64.layer4, x.cpu().double(), target)
    targets = [ClassifierOutputTarget(t) for t in target]
    rows = []
    for name, (pgc, tc) in PEERS.items():
        cls = METHODS[name]
        cam = _np(cls(model, model.layer4).attribute(x, target=target)[:, 0])
        reference = ref.CATALOGUE_FORMULAS[name](A64, g64)[:, 0]
        with getattr(pytorch_grad_cam, pgc[0])(model=model, target_layers=[model.layer4]) as peer:
            theirs = peer.get_cam_image(
                x, model.layer4, targets, _np(A, np.float32), _np(g, np.float32), False
            )
        variant = _np(cls(model, model.layer4, **pgc[1]).map_from_layer(A, g)[:, 0])
        vs_tc = "-"
        if tc is not None:
            with getattr(torchcam.methods, tc[0])(model, model.layer4) as extractor:
                scores = model(x)
                tmap = extractor(class_idx=target, scores=scores, normalized=False)[0].detach()
            mine = cls(model, model.layer4, **tc[1]).map_from_layer(A, g, True)[:, 0]
            vs_tc = f"{_relative(_np(mine), _np(tmap)):.1e}"
        rows.append(
            [
                name,
                f"{_relative(cam, reference):.1e}",
                f"{_relative(variant, theirs, up_to_sign=name.startswith('Eigen')):.1e}",
                vs_tc,
                str(_lines(cls)),
            ]
        )

    gradient = [*DEFAULT_METHODS, *PEERS]
    together = LayerCams(model, model.layer4, methods=gradient)
    four = LayerCams(model, model.layer4)
    ms = _interleaved_ms(
        {
            "floor": lambda: ref.capture_layer(model, model.layer4, x, target),
            "four": lambda: four.attribute(x, target=target),
            "all": lambda: together.attribute(x, target=target),
        },
        args.gradient_rounds,
        x.device,
    )
    all_ms, floor = ms["all"], ms["floor"]
    print(
        f"floor {floor:.1f} ms; the default four {ms['four'] / floor:.3f}x; the gradient family "
        f"({len(gradient)} methods) from one pass {all_ms / floor:.3f}x the floor "
        f"(median of {args.gradient_rounds} interleaved rounds)"
    )

    rows.extend(_perturbation_rows(model, model64, x, target, targets, A, g, args))
    header = ["method", "vs float64 reference", "vs pytorch-grad-cam", "vs torchcam", "lines"]
    print("| " + " | ".join([*header, "speed"]) + " |")
    print("|" + "---|" * (len(header) + 1))
    for row in rows:
        speed = row[5] if len(row) > 5 else f"in the family's {all_ms / floor:.3f}x the floor"
        print("| " + " | ".join([*row[:5], speed]) + " |")


if __name__ == "__main__":
    main()
