"""The contenders: the floor (one forward, one backward to the layer), each of our methods, all
of them from one pass, and the peers (Captum, pytorch-grad-cam, torchcam) where installed.

A peer's package is imported when its contender is made, so a missing one becomes a note in the
report instead of a failure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# the project's one float64 reference, and the (A, g) capture
import captum_camplus.testing.reference as ref
from benchmarks.cases import Case
from captum_camplus import DEFAULT_METHODS, LayerCams

FLOOR = "floor: forward + autograd.grad to the layer"
ALL_FOUR = "LayerCams (all four, one pass)"


#: Our contenders: the default methods (captum_camplus.DEFAULT_METHODS).
OURS = dict(DEFAULT_METHODS)


@dataclass
class Implementation:
    """A contender: ``run`` is what is timed; ``maps`` gives its layer-resolution maps.

    ``maps`` returns ``{method: (N, h, w) tensor}`` for the methods of :func:`reference_maps`
    that this implementation claims to compute (empty for the floor). ``arithmetic``, where the
    implementation exposes it, makes the maps from given ``(A, g)``: the cost above the floor.
    """

    name: str
    library: str
    run: Callable[[Case], object]
    maps: Callable[[Case], dict[str, Tensor]]
    arithmetic: Callable[[Case, Tensor, Tensor], object] | None = None
    reads_tokens: bool = True  #: whether it can explain a transformer's token layer


def layer_activation_and_gradient(case: Case) -> tuple[Tensor, Tensor]:
    """The floor: one forward and ``autograd.grad`` of the summed target scores w.r.t. the layer
    output, the least any gradient CAM must do
    (:func:`captum_camplus.testing.reference.capture_layer`, the same capture the tests evaluate
    the reference formulas on)."""
    return ref.capture_layer(case.model, case.layer, case.inputs, case.target)


#: Our Grad-CAM++ default clamps the denominator of Lerma & Lucas, eq. 13 at 2: checked as such.
OUR_FORMULA = {"Grad-CAM++": ref.CLAMPED_PP}


def _ours(name: str, cls: type) -> Implementation:
    def run(case: Case) -> Tensor:
        return cls(case.model, case.layer, layout=case.layout).attribute(
            case.inputs, target=case.target, relu_attributions=True
        )

    def arithmetic(case: Case, activation: Tensor, gradient: Tensor) -> Tensor:
        method = cls(case.model, case.layer, layout=case.layout)
        return method.map_from_layer(activation, gradient, True)

    return Implementation(
        name,
        "captum-camplus",
        run,
        lambda case: {OUR_FORMULA.get(name, name): run(case)[:, 0]},
        arithmetic,
    )


def _all_four() -> Implementation:
    def run(case: Case) -> dict[str, Tensor]:
        return LayerCams(case.model, case.layer, layout=case.layout).attribute(
            case.inputs, target=case.target, relu_attributions=True
        )

    def maps(case: Case) -> dict[str, Tensor]:
        return {OUR_FORMULA.get(method, method): cam[:, 0] for method, cam in run(case).items()}

    def arithmetic(case: Case, activation: Tensor, gradient: Tensor) -> dict[str, Tensor]:
        cams = LayerCams(case.model, case.layer, layout=case.layout)
        return cams.maps_from_layer(activation, gradient, relu_attributions=True)

    return Implementation(ALL_FOUR, "captum-camplus", run, maps, arithmetic)


def _captum() -> Implementation:
    from captum.attr import LayerGradCam as CaptumLayerGradCam

    def run(case: Case) -> Tensor:
        return CaptumLayerGradCam(case.model, case.layer).attribute(
            case.inputs, target=case.target, relu_attributions=True
        )

    return Implementation(
        "Captum LayerGradCam",
        "captum",
        run,
        lambda case: {"Grad-CAM": run(case)[:, 0]},
        reads_tokens=False,
    )


def _pytorch_grad_cam(class_name: str, method: str) -> Implementation:
    """pytorch-grad-cam as its README uses it: a context manager around one call.

    Its call returns maps upsampled to the input and min-max normalised (numpy); for accuracy we
    take its own layer-resolution map, ``get_cam_image`` on the activations and gradients it
    captured, with the ReLU its ``compute_cam_per_layer`` applies next.
    """
    import numpy as np
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = getattr(pytorch_grad_cam, class_name)

    def call(case: Case, keep_layer_map: bool) -> object:
        targets = [ClassifierOutputTarget(int(t)) for t in case.target.tolist()]
        with cls(
            model=case.model, target_layers=[case.layer], reshape_transform=case.reshape_transform
        ) as cam:
            heatmaps = cam(input_tensor=case.inputs, targets=targets)
            if not keep_layer_map:
                return heatmaps
            captured = cam.activations_and_grads
            activation = captured.activations[0].numpy()
            gradient = captured.gradients[0].numpy()
            layer_map = cam.get_cam_image(
                case.inputs, case.layer, targets, activation, gradient, False
            )
            return torch.from_numpy(np.maximum(layer_map, 0))

    return Implementation(
        f"pytorch-grad-cam {class_name}",
        "pytorch-grad-cam",
        lambda case: call(case, False),
        lambda case: {method: call(case, True)},
    )


def _torchcam_gradcampp() -> Implementation:
    """torchcam as its README uses it; its maps are at layer resolution, min-max normalised."""
    from torchcam.methods import GradCAMpp

    def call(case: Case, normalized: bool) -> Tensor:
        with GradCAMpp(case.model, case.layer) as extractor:
            scores = case.model(case.inputs)
            return extractor(class_idx=case.target.tolist(), scores=scores, normalized=normalized)[
                0
            ]

    return Implementation(
        "torchcam GradCAMpp",
        "torchcam",
        lambda case: call(case, True),
        lambda case: {"Grad-CAM++": call(case, False)},
        reads_tokens=False,
    )


PEERS: dict[str, Callable[[], list[Implementation]]] = {
    "captum": lambda: [_captum()],
    "pytorch-grad-cam": lambda: [
        _pytorch_grad_cam("GradCAM", "Grad-CAM"),
        _pytorch_grad_cam("GradCAMPlusPlus", "Grad-CAM++"),
        _pytorch_grad_cam("HiResCAM", "HiResCAM"),
    ],
    "torchcam": lambda: [_torchcam_gradcampp()],
}


def implementations(case: Case) -> tuple[list[Implementation], list[str]]:
    """Every contender for ``case``, and a note for each peer that is not installed or that
    cannot read the case's layer (Captum and torchcam have no token layout)."""
    floor = Implementation(
        FLOOR, "-", layer_activation_and_gradient, lambda case: {}
    )  # the floor makes no map
    found = [floor, *(_ours(name, cls) for name, cls in OURS.items()), _all_four()]
    missing = []
    for library, make in PEERS.items():
        try:
            found.extend(make())
        except ImportError as error:
            missing.append(f"{library} not installed ({error.name}): pip install -e '.[bench]'")
    if case.reshape_transform is not None:
        unable = [impl.name for impl in found if not impl.reads_tokens]
        found = [impl for impl in found if impl.reads_tokens]
        missing += [f"{name} left out: it has no way to read a token layer" for name in unable]
    return found, missing


__all__ = [
    "ALL_FOUR",
    "FLOOR",
    "OURS",
    "OUR_FORMULA",
    "PEERS",
    "Implementation",
    "implementations",
    "layer_activation_and_gradient",
]
