"""A sweep of ``layout="auto"`` over timm's registry, each stage checked against the model's own
NCHW intermediates (issue 22, item 8).

One model per timm family (the module of ``timm.models`` that registers it; the smallest variant
by parameter count, :data:`TIMM_MODELS`), at its default config with random init, 5 classes, eval
mode, float32, at a small square input (64 x 64, or the size its config states where 64 fails)
and at one non-square input (64 x 96, or the stated height and 1.5 times it). For each stage,
``forward_intermediates(x, indices=all, intermediates_only=True)`` of the float64 copy gives the
oracle ``O`` (N, C, h, w): timm strips the prefix tokens and re-rolls the tokens itself. The
module whose output in ``forward`` holds exactly ``O``'s cells is found by value (its tensor read
as rows of ``C`` channels; every cell of ``O`` equals one row, at most 1e-9 apart, on every image);
that row index per cell is the permutation ``p``. The float64 reference then evaluates each
method's equation (``captum_camplus.testing.reference``) on ``A[p]`` and ``g[p]`` reshaped to
(N, C, h, w): the layer's activation and its gradient (of the summed target scores) put on the
oracle's grid, independently of ``captum_camplus.layouts``. Hugging Face's
``reshaped_hidden_states`` are the oracle for Swin, Swin V2 and Hiera the same way.

Each (family, size, stage) gets one outcome:

* ``correct``: every method's map under ``layout="auto"`` (:class:`LayerCams`, all registered
  methods) has the oracle's grid and deviates by at most 1e-4 of the reference's largest value
  (float32 maps; where that fails, the float64 model's maps must be within 1e-6, float32
  rounding and not the layout being the cause: noted in the detail);
* ``refused``: a ``ValueError`` that names the layout (the library's refusal);
* ``wrong``: anything else (a map on another grid or with other values, another error);
* ``skipped``: the model does not build or run at that size, its oracle is not NCHW, no module
  outputs the oracle's cells, or it ran past the time limit: the reason is given.

Run from the repository root: ``python -m benchmarks.layout_sweep`` (all families; about 35
minutes on 2 shared CPU cores), ``--timm`` (timm's only), ``--quick`` (the slow test's subset) or
``--families resnet hf_swin ...``; ``--seconds`` is the limit per model and size, ``--out FILE``
writes the Markdown table, ``--json FILE`` the rows (after each family), and ``--combine A.json
B.json --out FILE`` renders saved runs together, a later run's rows of a family replacing the
earlier ones (``benchmarks/results/layout-sweep.md`` is made so).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import timm
import torch
import transformers
from torch import nn

import captum_camplus.testing.reference as ref
from captum_camplus import LayerCams
from captum_camplus.registry import FAMILIES

CLASSES = 5
TARGET = [3, 1]
TOLERANCE = 1e-4  # float32 maps, relative to the reference's largest value
TOLERANCE64 = 1e-6  # float64 maps, where float32 rounding exceeds TOLERANCE
MAX_STAGES = 4  # stages checked per model: evenly spread, the last included
MAX_PARAMS = 30e6  # larger smallest variants are skipped (time), unless --max-params says

#: timm family (module of ``timm.models``) -> its smallest model by parameter count among the
#: names that read smallest (timm 1.0.31).
TIMM_MODELS: dict[str, str] = {
    "beit": "beit_base_patch16_224",
    "byoanet": "halonet_h1",
    "byobnet": "test_byobnet",
    "cait": "cait_xxs24_224",
    "coat": "coat_tiny",
    "convit": "convit_tiny",
    "convmixer": "convmixer_768_32",
    "convnext": "test_convnext",
    "cpubone": "cpubone_nano",
    "crossvit": "crossvit_tiny_240",
    "csatv2": "csatv2",
    "cspnet": "cs3darknet_focus_s",
    "cspnext": "cspnext_tiny",
    "davit": "davit_tiny",
    "deepseek_vit": "deepseek_vit_412m",
    "deit": "deit_tiny_distilled_patch16_224",
    "densenet": "densenet121",
    "dla": "dla34",
    "dpn": "dpn48b",
    "edgenext": "edgenext_xx_small",
    "efficientformer": "efficientformer_l1",
    "efficientformer_v2": "efficientformerv2_s0",
    "efficientnet": "test_efficientnet",
    "efficientvim": "efficientvim_m1",
    "efficientvit_mit": "efficientvit_b0",
    "efficientvit_msra": "efficientvit_m0",
    "eva": "vit_tiny_patch16_dinov3_qkvb",
    "fasternet": "fasternet_t0",
    "fastvit": "fastvit_t8",
    "focalnet": "focalnet_tiny_srf",
    "gcvit": "gcvit_xxtiny",
    "gemma4_vit": "gemma4_vit_167m_enc",
    "ghostnet": "ghostnet_050",
    "hardcorenas": "hardcorenas_b",
    "hgnet": "hgnetv2_b0",
    "hiera": "hiera_tiny_224",
    "hieradet_sam2": "sam2_hiera_tiny",
    "hrnet": "hrnet_w18_small",
    "iformer": "iformer_s",
    "inception_next": "inception_next_atto",
    "inception_resnet_v2": "inception_resnet_v2",
    "inception_v3": "inception_v3",
    "inception_v4": "inception_v4",
    "lcnetv2": "lcnetv2_small",
    "levit": "levit_128",
    "lowformer": "lowformer_b0",
    "mambaout": "test_mambaout",
    "maxxvit": "test_coatnet",
    "metaformer": "caformer_s18",
    "mlp_mixer": "gmixer_12_224",
    "mobilenetv3": "mobilenetv3_small_050",
    "mobilenetv5": "mobilenetv5_base",
    "mobilevit": "mobilevit_xxs",
    "mvitv2": "mvitv2_tiny",
    "naflexvit": "naflexvit_base_patch16_gap",
    "nasnet": "nasnetalarge",
    "nest": "nest_tiny",
    "nextvit": "nextvit_small",
    "nfnet": "test_nfnet",
    "pit": "pit_ti_224",
    "pnasnet": "pnasnet5large",
    "pvt_v2": "pvt_v2_b0",
    "qwen3_vit": "qwen3_vit_88m",
    "rdnet": "rdnet_tiny",
    "regnet": "regnetx_002",
    "repghost": "repghostnet_050",
    "repvit": "repvit_m1",
    "res2net": "res2next50",
    "resnest": "resnest14d",
    "resnet": "test_resnet",
    "resnetv2": "resnetv2_18",
    "rexnet": "rexnet_100",
    "selecsls": "selecsls42",
    "senet": "legacy_seresnet18",
    "sequencer": "sequencer2d_s",
    "shvit": "shvit_s1",
    "sknet": "skresnet18",
    "starnet": "starnet_s1",
    "swiftformer": "swiftformer_xs",
    "swin_transformer": "swin_tiny_patch4_window7_224",
    "swin_transformer_v2": "swinv2_tiny_window8_256",
    "swin_transformer_v2_cr": "swinv2_cr_tiny_224",
    "tiny_vit": "tiny_vit_5m_224",
    "tnt": "tnt_s_legacy_patch16_224",
    "tresnet": "tresnet_m",
    "twins": "twins_svt_small",
    "vgg": "vgg11",
    "visformer": "visformer_tiny",
    "vision_transformer": "test_vit",
    "vision_transformer_hybrid": "vit_tiny_r_s16_p8_224",
    "vision_transformer_relpos": "test_vit_relpos",
    "vision_transformer_sam": "samvit_base_patch16_224",
    "vitamin": "vitamin_small_224",
    "volo": "volo_d1_224",
    "vovnet": "vovnet39a",
    "xception": "legacy_xception",
    "xception_aligned": "xception41p",
    "xcit": "xcit_nano_12_p8_224",
}

#: The slow test's subset (the quicker families): token (class, distillation), channels-last,
#: token-only (LeViT) and convolutional families, and Hugging Face's Swin and re-rolled Hiera.
QUICK_FAMILIES = [
    "vision_transformer",
    "deit",
    "swin_transformer",
    "levit",
    "convnext",
    "resnet",
    "efficientnet",
    "mambaout",
    "hf_swin",
    "hf_hiera",
]

OUTCOMES = ("correct", "refused", "wrong", "skipped")


@dataclass(frozen=True)
class Row:
    """One (family, size, stage) outcome."""

    family: str
    model: str
    size: str
    stage: str
    outcome: str
    detail: str


class Skip(Exception):
    """The model cannot be checked at this size; the message says why."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`TimeoutError` after ``seconds`` (SIGALRM; main thread only)."""

    def expire(signum, frame):
        raise TimeoutError(f"over the {seconds:.0f} s limit per model")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _short(error: BaseException, n: int = 240) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _logits(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.logits


def _random_head(model: nn.Module) -> None:
    """timm scales some heads to ~0 at init (every gradient ~0): a random head instead."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    heads = head if isinstance(head, tuple | list) else [head]
    for module in heads:
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() >= 2:
            fan_in = weight[0].numel()
            with torch.no_grad():
                weight.normal_(0.0, fan_in**-0.5)


def _timm_candidates(name: str, size: tuple[int, int]) -> list[dict]:
    """Keyword sets to try for an input of ``size``: ``img_size`` (a model without it fails
    at once), none, then a dynamic size."""
    return [{"img_size": size}, {}, {"dynamic_img_size": True}, {"img_size": size[0]}]


def _sizes(name: str) -> list[tuple[str, list[tuple[int, int]]]]:
    """(label, candidate sizes): the square sizes, then the non-square ones."""
    stated = timm.models.get_pretrained_cfg(name)
    side = int(stated.input_size[-1]) if stated is not None else 224
    wide = (side, (side * 3 // 2 + 31) // 32 * 32)
    return [("square", [(64, 64), (side, side)]), ("non-square", [(64, 96), wide])]


def build_timm(name: str, sizes: list[tuple[int, int]]) -> tuple[nn.Module, torch.Tensor, str]:
    """The first model (random init, float32, eval) that runs forward and its
    ``forward_intermediates`` at one of ``sizes``; :class:`Skip` with the last error if none."""
    last: BaseException | None = None
    for size in sizes:
        for kwargs in _timm_candidates(name, size):
            try:
                torch.manual_seed(0)
                model = timm.create_model(name, pretrained=False, num_classes=CLASSES, **kwargs)
                model.eval()
                x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
                with torch.no_grad():
                    model(x)
                    model.forward_intermediates(x, intermediates_only=True)
            except TimeoutError:
                raise
            except Exception as error:  # noqa: BLE001 - any failure: try the next config
                last = error
                continue
            _random_head(model)
            note = ", ".join(f"{k}={v}" for k, v in kwargs.items())
            return model, x, f"{size[0]} x {size[1]}" + (f" ({note})" if note else "")
    raise Skip(f"does not run at {' or '.join(f'{h} x {w}' for h, w in sizes)}: {_short(last)}")


# ------------------------------------------------------------------------------------ oracles


def _outputs(
    model: nn.Module, x: torch.Tensor
) -> tuple[dict[str, torch.Tensor], set[str], set[str]]:
    """Each module's output in ``model(x)`` (detached; a tuple's first tensor), the names called
    twice or that return an input (an empty ``nn.Sequential``: the gradient at such a layer is
    that of its own consumers only, as in Captum, not the tensor's), and the names that return
    a tuple."""
    outputs: dict[str, torch.Tensor] = {}
    twice: set[str] = set()
    tupled: set[str] = set()
    handles = []
    for name, module in model.named_modules():
        if not name or isinstance(module, nn.Identity | nn.Dropout):
            continue

        def keep(m, a, out, name=name):
            if name in outputs or any(out is t for t in a):
                twice.add(name)  # called twice, or passes an input through: not the producer
            if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
                tupled.add(name)
                out = out[0]
            if isinstance(out, torch.Tensor):
                outputs[name] = out.detach().clone()

        handles.append(module.register_forward_hook(keep))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, twice, tupled


#: Last names of token-wise modules (the same token order in and out): Hugging Face's layers
#: return tuples, so the stage is checked at their MLP, read by the layer's permutation.
TOKEN_WISE = ("mlp", "output")


def _rows(tensor: torch.Tensor, axis: int) -> torch.Tensor:
    """(N, positions, C): ``tensor`` with its channel ``axis`` last, other axes flattened."""
    return tensor.movedim(axis, -1).reshape(tensor.shape[0], -1, tensor.shape[axis])


def match(tensor: torch.Tensor, oracle: torch.Tensor) -> tuple[int, torch.Tensor] | None:
    """(channel axis, permutation p) with ``rows(tensor)[:, p] == cells(oracle)`` on every
    image, the cells of ``oracle`` (N, C, h, w) in row-major order; None if none holds."""
    n, c = oracle.shape[:2]
    if tensor.dim() < 3 or tensor.shape[0] != n or tensor.numel() < oracle.numel():
        return None
    cells = oracle.flatten(2).transpose(1, 2)  # (N, h*w, C)
    scale = float(cells.abs().max()) or 1.0
    for axis in range(1, tensor.dim()):
        if tensor.shape[axis] != c:
            continue
        rows = _rows(tensor, axis)
        first = (rows[0] - cells[0, 0]).abs().amax(dim=1)
        if float(first.min()) > 1e-9 * scale:
            continue
        perm = torch.cdist(cells[0], rows[0]).argmin(dim=1)
        if len(set(perm.tolist())) != len(perm):
            continue
        if float((rows[:, perm] - cells).abs().max()) <= 1e-9 * scale:
            return axis, perm
    return None


@dataclass
class Stage:
    """A stage's oracle, the module that outputs its cells and how."""

    label: str
    grid: tuple[int, int]
    module: str | None
    axis: int = 0
    perm: torch.Tensor | None = None
    why: str = ""


def find_stages(
    model64: nn.Module, x64: torch.Tensor, oracles: list[tuple[str, torch.Tensor]]
) -> list[Stage]:
    """For each oracle, the last module (in call order: the outermost) whose tensor output holds
    its cells; else, for one that returns a tuple, its last token-wise descendant of the same shape
    (:data:`TOKEN_WISE`), read by the same permutation."""
    outputs, twice, tupled = _outputs(model64, x64)
    order = list(outputs)  # hooks fire innermost first: later = outer
    stages = []
    for label, oracle in oracles:
        if oracle.dim() != 4:
            stages.append(Stage(label, (0, 0), None, why=f"oracle of shape {tuple(oracle.shape)}"))
            continue
        grid = (int(oracle.shape[2]), int(oracle.shape[3]))
        found = None  # a module returning a tensor, else one returning a tuple
        for name in reversed(order):
            if name in twice or (found is not None and name in tupled):
                continue
            hit = match(outputs[name], oracle)
            if hit is not None:
                found = (name, *hit)
                if name not in tupled:
                    break
        if found is None:
            stages.append(Stage(label, grid, None, why="no module outputs the oracle's cells"))
            continue
        name, axis, perm = found
        if name in tupled:
            inner = [
                n
                for n in order
                if n.startswith(name + ".")
                and n.rsplit(".", 1)[-1] in TOKEN_WISE
                and n not in tupled | twice
                and outputs[n].shape == outputs[name].shape
            ]
            if not inner:
                why = f"only `{name}`, which returns a tuple, outputs the oracle's cells"
                stages.append(Stage(label, grid, None, why=why))
                continue
            stages.append(Stage(label, grid, inner[-1], axis, perm, why=f"tokens of `{name}`"))
        else:
            stages.append(Stage(label, grid, name, axis, perm))
    return stages


def _spread(count: int) -> list[int]:
    """At most :data:`MAX_STAGES` indices of ``range(count)``, evenly spread, the last included."""
    if count <= MAX_STAGES:
        return list(range(count))
    return sorted({round(i * (count - 1) / (MAX_STAGES - 1)) for i in range(MAX_STAGES)})


def timm_oracles(model64: nn.Module, x64: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    with torch.no_grad():
        every = model64.forward_intermediates(x64, intermediates_only=True)
    return [(f"index {i}", every[i]) for i in _spread(len(every))]


# ---------------------------------------------------------------------------- the comparison

REFERENCES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Grad-CAM": ref.grad_cam,
    "Grad-CAM+": ref.grad_cam_plus,
    "Grad-CAM++": lambda A, g: ref.grad_cam_pp(A, g, form="simplified", stabilizer="clamp"),
    "HiResCAM": ref.hires_cam,
    **ref.CATALOGUE_FORMULAS,
}


def capture(
    model64: nn.Module, x64: torch.Tensor, names: list[str]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each named module's float64 output A and gradient g of the summed target scores, by hand
    (one forward, one ``autograd.grad``)."""
    kept: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:

        def keep(m, a, out, name=name):
            kept[name] = out
            return out.clone()  # later in-place ops must not change A

        handles.append(model64.get_submodule(name).register_forward_hook(keep))
    try:
        scores = _logits(model64(x64))
    finally:
        for handle in handles:
            handle.remove()
    score = scores[torch.arange(len(x64)), torch.as_tensor(TARGET)].sum()
    grads = torch.autograd.grad(score, [kept[n] for n in names], allow_unused=True)
    return {
        n: (kept[n].detach(), torch.zeros_like(kept[n]) if g is None else g)
        for n, g in zip(names, grads, strict=True)
    }


def on_grid(tensor: torch.Tensor, stage: Stage) -> np.ndarray:
    """The module's tensor on the oracle's grid (N, C, h, w), by the matched permutation."""
    assert stage.perm is not None
    rows = _rows(tensor, stage.axis)[:, stage.perm]  # (N, h*w, C)
    grid = rows.reshape(len(rows), *stage.grid, -1).permute(0, 3, 1, 2)
    return grid.double().numpy()


def _deviation(cam: torch.Tensor, expected: np.ndarray) -> float:
    """max |cam - expected| / max |expected| (absolute where the reference is 0)."""
    scale = float(np.abs(expected).max()) or 1.0
    return float(np.abs(cam.detach().double().numpy() - expected).max() / scale)


def _is_refusal(error: BaseException) -> bool:
    return isinstance(error, ValueError) and "layout" in str(error)


def check_stage(
    model: nn.Module,
    model64: nn.Module,
    x: torch.Tensor,
    stage: Stage,
    expected: dict[str, np.ndarray],
) -> tuple[str, str]:
    """(outcome, detail) of every method under ``layout="auto"`` at the stage's module."""
    assert stage.module is not None

    def maps(m: nn.Module, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        methods = list(FAMILIES["gradient"])  # the maps of (A, g): what a layout reads
        cams = LayerCams(m, m.get_submodule(stage.module), methods=methods, layout="auto")
        return cams.attribute(inputs, target=TARGET)

    try:
        got = maps(model, x)
    except TimeoutError:
        raise
    except Exception as error:  # noqa: BLE001 - the outcome is the error
        return ("refused" if _is_refusal(error) else "wrong"), _short(error)
    bad = {}
    for method, reference in expected.items():
        cam = got[method]
        if tuple(cam.shape) != reference.shape:
            return "wrong", f"{method}: map {tuple(cam.shape)}, oracle {reference.shape}"
        dev = _deviation(cam, reference)
        if not dev <= TOLERANCE:
            bad[method] = dev
    if not bad:
        return "correct", ""
    listed = ", ".join(f"{m} {d:.1e}" for m, d in bad.items())
    try:
        got64 = maps(model64, x.double())
    except TimeoutError:
        raise
    except Exception as error:  # noqa: BLE001 - undecided: counted wrong, the detail says why
        return "wrong", f"{listed}; the float64 model: {_short(error)}"
    worst64 = max(_deviation(got64[m], expected[m]) for m in bad)
    if worst64 <= TOLERANCE64:
        return "correct", f"float32 rounding ({listed}); float64 maps within {worst64:.0e}"
    return "wrong", f"{listed}; float64 maps {worst64:.1e}"


def check_model(
    family: str,
    model_name: str,
    size_label: str,
    model: nn.Module,
    x: torch.Tensor,
    size_text: str,
    oracles_of: Callable[[nn.Module, torch.Tensor], list[tuple[str, torch.Tensor]]],
) -> list[Row]:
    """Every stage's outcome for one built model."""
    model64 = copy.deepcopy(model).double()
    x64 = x.double()
    stages = find_stages(model64, x64, oracles_of(model64, x64))
    usable = [s for s in stages if s.module is not None]
    names = sorted({s.module for s in usable if s.module})
    captured = capture(model64, x64, names) if names else {}
    rows = []
    for stage in stages:
        where = f"{stage.label}: " + (f"`{stage.module}`" if stage.module else "-")
        if stage.module is None:
            rows.append(Row(family, model_name, size_text, where, "skipped", stage.why))
            continue
        A, g = captured[stage.module]
        gA, gg = on_grid(A, stage), on_grid(g, stage)
        expected = {m: formula(gA, gg) for m, formula in REFERENCES.items()}
        outcome, detail = check_stage(model, model64, x, stage, expected)
        if stage.why:
            detail = f"{stage.why}; {detail}" if detail else stage.why
        rows.append(Row(family, model_name, size_text, where, outcome, detail))
    return rows


def sweep_timm(family: str, seconds: float, max_params: float = MAX_PARAMS) -> list[Row]:
    name = TIMM_MODELS[family]
    rows: list[Row] = []
    for label, sizes in _sizes(name):
        try:
            with time_limit(seconds):
                with torch.device("meta"):
                    params = sum(
                        p.numel() for p in timm.create_model(name, num_classes=CLASSES).parameters()
                    )
                if params > max_params:
                    raise Skip(f"{params / 1e6:.0f} M parameters, over the sweep's cap")
                model, x, size_text = build_timm(name, sizes)
                rows += check_model(family, name, label, model, x, size_text, timm_oracles)
        except (Skip, TimeoutError) as error:
            rows.append(Row(family, name, label, "-", "skipped", str(error)))
        except Exception as error:  # noqa: BLE001 - the harness, not the layout: reported
            rows.append(Row(family, name, label, "-", "skipped", "harness: " + _short(error)))
    return rows


# ------------------------------------------------------------------------------ Hugging Face


def _hf_swin(version: int, size: tuple[int, int]) -> nn.Module:
    config_class, model_class = {
        1: (transformers.SwinConfig, transformers.SwinForImageClassification),
        2: (transformers.Swinv2Config, transformers.Swinv2ForImageClassification),
    }[version]
    config = config_class(
        image_size=size[0],
        embed_dim=32,
        depths=[1, 1, 2, 1],
        num_heads=[1, 2, 4, 8],
        window_size=2,
        num_labels=CLASSES,
    )
    return model_class(config)


def _hf_hiera(size: tuple[int, int]) -> nn.Module:
    config = transformers.HieraConfig(
        image_size=list(size),
        embed_dim=16,
        depths=[1, 1, 2, 1],
        num_heads=[1, 1, 2, 2],
        num_labels=CLASSES,
    )
    model = transformers.HieraForImageClassification(config)
    return model


#: family -> (model class name, builder at a size, whether the oracle is channels-last)
HF_FAMILIES: dict[str, tuple[str, Callable[[tuple[int, int]], nn.Module], bool]] = {
    "hf_swin": ("SwinForImageClassification", lambda s: _hf_swin(1, s), False),
    "hf_swinv2": ("Swinv2ForImageClassification", lambda s: _hf_swin(2, s), False),
    "hf_hiera": ("HieraForImageClassification", _hf_hiera, True),
}


def _hf_oracles(channels_last: bool):
    def oracles(model64: nn.Module, x64: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        with torch.no_grad():
            states = model64(x64, output_hidden_states=True).reshaped_hidden_states
        out = []
        for i in _spread(len(states)):
            state = states[i].movedim(-1, 1) if channels_last else states[i]
            out.append((f"reshaped {i}", state))
        return out

    return oracles


def sweep_hf(family: str, seconds: float, max_params: float = MAX_PARAMS) -> list[Row]:
    name, builder, channels_last = HF_FAMILIES[family]
    rows: list[Row] = []
    for label, sizes in [("square", [(64, 64)]), ("non-square", [(64, 96)])]:
        try:
            with time_limit(seconds):
                last: BaseException | None = None
                for size in sizes:
                    try:
                        torch.manual_seed(0)
                        model = builder(size).eval()
                        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
                        with torch.no_grad():
                            out = model(x, output_hidden_states=True)
                        if not out.reshaped_hidden_states:
                            raise Skip("no reshaped_hidden_states")
                        break
                    except TimeoutError:
                        raise
                    except Exception as error:  # noqa: BLE001 - try the next size
                        last = error
                else:
                    raise Skip(f"does not run at {sizes}: {_short(last) if last else ''}")
                nn.init.normal_(model.classifier.weight, std=model.classifier.in_features**-0.5)
                size_text = f"{size[0]} x {size[1]}"
                rows += check_model(
                    family, name, label, model, x, size_text, _hf_oracles(channels_last)
                )
        except (Skip, TimeoutError) as error:
            rows.append(Row(family, name, label, "-", "skipped", str(error)))
        except Exception as error:  # noqa: BLE001 - the harness: reported
            rows.append(Row(family, name, label, "-", "skipped", "harness: " + _short(error)))
    return rows


# ------------------------------------------------------------------------------------ report


def sweep(
    families: list[str],
    seconds: float = 40.0,
    log: Callable[[str], None] | None = None,
    saved: Callable[[list[Row]], None] | None = None,
    max_params: float = MAX_PARAMS,
) -> list[Row]:
    """Every row of ``families`` (timm modules or :data:`HF_FAMILIES` keys); ``log`` gets a line
    per family, ``saved`` the rows so far after each family; timm models with more than
    ``max_params`` parameters are skipped."""
    rows: list[Row] = []
    for family in families:
        start = time.perf_counter()
        run = sweep_hf if family in HF_FAMILIES else sweep_timm
        got = run(family, seconds, max_params)
        rows += got
        if log is not None:
            counts = Counter(r.outcome for r in got)
            summary = " ".join(f"{o} {counts[o]}" for o in OUTCOMES if counts[o])
            log(f"{family:28s} {time.perf_counter() - start:6.1f} s  {summary}")
        if saved is not None:
            saved(rows)
    return rows


def table(rows: list[Row], seconds: float, command: str) -> str:
    """Markdown: families x outcome counts, the totals, then every row that is not correct."""
    families = list(dict.fromkeys(r.family for r in rows))
    lines = [
        '# Layout sweep: `layout="auto"` against each model\'s own NCHW intermediates',
        "",
        f"timm {timm.__version__}, transformers {transformers.__version__}, "
        f"torch {torch.__version__}; {len(families)} families, {len(rows)} (family, size, stage) "
        f"rows in {seconds:.0f} s on the CPU. Rerun: `{command}`.",
        "",
        "Each row: every registered gradient method "
        '(`LayerCams(methods=list(FAMILIES["gradient"]))`) at the module'
        ' that outputs the stage\'s cells, under `layout="auto"`, against the float64 '
        "reference evaluated on the layer tensor put on the oracle's grid "
        "(`benchmarks/layout_sweep.py` says how).",
        "",
    ]
    totals = Counter(r.outcome for r in rows)
    lines += [
        "| | " + " | ".join(OUTCOMES) + " |",
        "|---" * (1 + len(OUTCOMES)) + "|",
        "| **all** | " + " | ".join(f"**{totals[o]}**" for o in OUTCOMES) + " |",
        "",
        "| family | model | " + " | ".join(OUTCOMES) + " |",
        "|---" * (2 + len(OUTCOMES)) + "|",
    ]
    for family in families:
        mine = [r for r in rows if r.family == family]
        counts = Counter(r.outcome for r in mine)
        lines.append(
            f"| {family} | `{mine[0].model}` | "
            + " | ".join(str(counts[o]) for o in OUTCOMES)
            + " |"
        )
    others = [r for r in rows if r.outcome != "correct" or r.detail]
    if others:
        lines += ["", "## Rows other than a plain `correct`", ""]
        lines += ["| family | size | stage | outcome | detail |", "|---|---|---|---|---|"]
        for r in others:
            detail = r.detail.replace("|", "\\|")
            lines.append(f"| {r.family} | {r.size} | {r.stage} | {r.outcome} | {detail} |")
    return "\n".join(lines) + "\n"


def all_families() -> list[str]:
    return list(TIMM_MODELS) + list(HF_FAMILIES)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", nargs="*", help="timm modules or hf_* (default: all)")
    parser.add_argument("--timm", action="store_true", help="every timm family")
    parser.add_argument("--quick", action="store_true", help="the slow test's subset")
    parser.add_argument("--seconds", type=float, default=40.0, help="limit per model and size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--max-params", type=float, default=MAX_PARAMS, help="skip larger models (default 30e6)"
    )
    parser.add_argument("--out", help="write the Markdown table here")
    parser.add_argument("--json", help="write the rows here (JSON)")
    parser.add_argument(
        "--combine", nargs="+", metavar="JSON", help="render the rows of earlier --json runs"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.combine:
        by_family: dict[str, list[Row]] = {}
        seconds, commands = 0.0, []
        for path in args.combine:  # a later run's rows of a family replace the earlier ones
            with open(path) as handle:
                saved = json.load(handle)
            later: dict[str, list[Row]] = {}
            for r in saved["rows"]:
                later.setdefault(r["family"], []).append(Row(**r))
            by_family.update(later)
            seconds += saved["seconds"]
            commands.append(saved["command"])
        rows = [r for family_rows in by_family.values() for r in family_rows]
        text = table(rows, seconds, "`, then `".join(commands))
        print(text)
        if args.out:
            with open(args.out, "w") as handle:
                handle.write(text)
        return
    families = args.families or (
        QUICK_FAMILIES if args.quick else list(TIMM_MODELS) if args.timm else all_families()
    )
    unknown = [f for f in families if f not in TIMM_MODELS and f not in HF_FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; known: {all_families()}")
    start = time.perf_counter()
    command = "python -m benchmarks.layout_sweep " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:])
    )
    command = re.sub(r"\s+", " ", command).strip()

    def save(rows: list[Row]) -> None:
        if args.json:
            with open(args.json, "w") as handle:
                seconds = time.perf_counter() - start
                saved = {"command": command, "seconds": seconds, "rows": [asdict(r) for r in rows]}
                json.dump(saved, handle, indent=1)

    rows = sweep(
        families,
        args.seconds,
        log=lambda s: print(s, file=sys.stderr, flush=True),
        saved=save,
        max_params=args.max_params,
    )
    text = table(rows, time.perf_counter() - start, command)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
