"""The bases of the perturbation family: channel weights from further forwards of the model,
run in chunks on the maps' device under a memory budget.

:class:`MaskingCam` scores the input masked by each channel (Score-CAM), :class:`ChannelEditCam`
the image with one channel of the layer's output edited (Ablation-CAM); a method on either
states only its weighting rule.

References:
- Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu (2020), "Score-CAM: score-weighted visual
  explanations for convolutional neural networks", CVPR workshops, arXiv:1910.01279.
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD,
  arXiv:2404.01964 (appendix A, definitions 7-8).
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from captum._utils.common import _format_additional_forward_args, _format_tensor_into_tuples
from captum._utils.typing import TargetType
from captum.log import log_usage
from torch import Tensor
from torch.nn import Module

from captum_camplus.base import CamAttribution, Forwards, channel_sum, check_flags
from captum_camplus.capture import LayerCapture
from captum_camplus.checks import check_output, check_target, model_scores
from captum_camplus.layouts import DefaultLayout, LayoutSpec
from captum_camplus.modules import cpu_forward_rows
from captum_camplus.registry import display_name

#: ``progress(done, total)``: called after each chunk of forwards.
Progress = Callable[[int, int], None]


class PerturbationCam(CamAttribution, abc.ABC):
    """A CAM whose channel weights :meth:`channel_weights` come from forwards of the model.

    The map is ``sum_k w_k A^k`` as for the gradient methods; :meth:`attribute` takes one
    forward to capture ``A`` (no backward), and :class:`~captum_camplus.LayerCams` shares its
    capture (it passes the model and batch as :class:`~captum_camplus.base.Forwards`).

    Args:
        memory_budget: Bytes that the batched tensor of one chunk of forwards (masked inputs or
            ablated layer tensors) may take; a budget below one forward's raises ``ValueError``.
            On a CPU a chunk also holds at most
            :data:`~captum_camplus.modules.CPU_FORWARD_BYTES` (faster per row there).
        progress: ``progress(done, total)``, called after each chunk (e.g. a tqdm's update).
    """

    family = "perturbation"

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layer: Module,
        device_ids: list[int] | None = None,
        *,
        memory_budget: int = 256 * 2**20,
        progress: Progress | None = None,
        layout: LayoutSpec = None,
    ) -> None:
        super().__init__(forward_func, layer, device_ids, layout=layout)
        if not isinstance(self.layout, DefaultLayout):
            raise ValueError(
                f"{type(self).__name__} edits a channels-first layer (N, C, H, W): layout "
                f"{self.layout} is not supported; choose a convolutional layer"
            )
        if isinstance(memory_budget, bool) or not isinstance(memory_budget, int):
            raise TypeError(f"memory_budget is a number of bytes, got {memory_budget!r}")
        self.memory_budget = memory_budget
        self.progress = progress

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        raise TypeError(
            f"{type(self).__name__} weights channels by forwards of the model, not by (A, g): "
            "call attribute(), or LayerCams.attribute()"
        )

    @abc.abstractmethod
    def channel_weights(self, activation: Tensor, forwards: Forwards) -> Tensor:
        """The ``(N, C)`` weights of ``A`` (``(N, C, H, W)``), from forwards of the model."""

    def map_from_grid(
        self,
        activation: Tensor,
        gradient: Tensor,
        relu: bool,
        sum_: bool,
        forwards: Forwards | None = None,
    ) -> Tensor:
        if forwards is None:
            self.weights(activation, gradient)  # raises: what to call instead
        assert forwards is not None
        if activation.dim() != 4:
            raise ValueError(
                f"{type(self).__name__} needs a layer with a 2-D grid, (N, C, H, W); this one "
                f"gives {tuple(activation.shape)}"
            )
        with torch.no_grad():
            a = activation.detach().float() if activation.dtype.itemsize < 4 else activation
            w = self.channel_weights(a.detach(), forwards).to(a.dtype)
            cam = channel_sum(a, w) if sum_ else w[..., None, None] * a
        cam = torch.relu(cam) if relu else cam
        return cam.to(activation.dtype) if torch.isfinite(cam.to(activation.dtype)).all() else cam

    @log_usage()
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = False,
        attr_dim_summation: bool = True,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> Tensor | tuple[Tensor, ...]:
        """Captum's ``LayerGradCam.attribute``: one forward to capture ``A``, then the forwards
        of the method; ``attribute_to_layer_input`` and ``grad_kwargs`` are refused."""
        check_flags(relu_attributions=relu_attributions, attr_dim_summation=attr_dim_summation)
        if attribute_to_layer_input or grad_kwargs:
            raise ValueError(
                f"{type(self).__name__} weights the layer's output and takes no gradients: "
                "attribute_to_layer_input and grad_kwargs are not supported"
            )
        batch = _format_tensor_into_tuples(inputs)
        target = check_target(target, batch[0].shape[0])
        extra = _format_additional_forward_args(additional_forward_args) or ()
        capture = LayerCapture(self.forward_func, self.layer, batch, extra)
        check_output(capture.outputs, target, batch[0].shape[0])
        activation = capture.activation.detach()
        forwards = Forwards(self.forward_func, batch, target, extra)
        zeros = torch.zeros_like(activation)
        return self.map_from_grid(
            activation, zeros, relu_attributions, attr_dim_summation, forwards
        )

    def chunks(self, total: int, row_bytes: int, device: torch.device) -> list[slice]:
        """Slices of ``range(total)`` whose rows of ``row_bytes`` fit the memory budget (and, on
        a CPU, at most :data:`~captum_camplus.modules.CPU_FORWARD_BYTES`)."""
        per_chunk = self.memory_budget // max(row_bytes, 1)
        if device.type == "cpu":
            per_chunk = min(per_chunk, cpu_forward_rows(row_bytes))
        if self.memory_budget < row_bytes:
            raise ValueError(
                f"memory_budget={self.memory_budget} bytes is too small for one forward of "
                f"{type(self).__name__}, which takes {row_bytes} bytes: pass memory_budget >= "
                f"{row_bytes}"
            )
        return [slice(s, min(s + per_chunk, total)) for s in range(0, total, per_chunk)]

    def report(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)

    @property
    def title(self) -> str:
        """The method's registered name (its class name if it is not registered)."""
        return display_name(type(self))


class MaskingCam(PerturbationCam):
    r"""Channel weights from ``s_k = f(X \odot H^k)``, the scores of the input masked by each
    channel; a subclass states only :meth:`weights_from_scores`.

    .. math:: H^k = \frac{U^k - \min U^k}{\max U^k - \min U^k}, \quad U^k = \mathrm{Up}(A^k)

    ``Up`` is bilinear (Wang et al.'s code uses ``align_corners=True``, as pytorch-grad-cam
    does). A constant channel masks everything (``H = 0``): one forward of ``X * 0`` per image
    scores all its constant channels. The masked input lies between 0 and ``X``: 0 must be an
    input value the model accepts.
    """

    def __init__(self, *args: Any, align_corners: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.align_corners = align_corners

    @abc.abstractmethod
    def weights_from_scores(self, scores: Tensor) -> Tensor:
        """The ``(N, C)`` weights from the ``(N, C)`` scores ``f(X * H^k)``."""

    def masks(self, channels: Tensor, size: tuple[int, ...]) -> Tensor:
        """``H^k`` as ``(rows, 1, *size)`` from channels ``(rows, h, w)``."""
        up = F.interpolate(
            channels[:, None], size=size, mode="bilinear", align_corners=self.align_corners
        ).flatten(1)
        low, high = up.aminmax(dim=1, keepdim=True)
        return torch.where(high > low, (up - low) / (high - low), 0.0).view(-1, 1, *size)

    def channel_weights(self, activation: Tensor, forwards: Forwards) -> Tensor:
        x = forwards.inputs[0]
        if not x.is_floating_point() or x.dim() != 4:
            raise ValueError(
                f"{self.title} multiplies the input images by masks in [0, 1]: it needs float "
                f"(N, C, H, W) inputs, got {x.dtype} {tuple(x.shape)}"
            )
        n, c = activation.shape[:2]
        index = torch.arange(n * c, device=activation.device)
        image = index // c
        # the first constant channel of each image runs (its mask is 0); the others copy its score
        low, high = activation.flatten(2).aminmax(dim=2)
        constant = (high <= low).flatten()
        first = torch.full((n,), n * c, device=index.device)
        first = first.scatter_reduce(0, image[constant], index[constant], "amin")
        run = index[~constant | (index == first[image])]
        scores = torch.empty(n * c, device=activation.device, dtype=activation.dtype)
        edited = (
            f"{self.title}'s masked inputs X * H^k, which lie between 0 and X",
            "0 must be in the range of inputs the model accepts (normalise the inputs so "
            "that it is, or choose a gradient method)",
        )
        for part in self.chunks(len(run), x[0].numel() * x.element_size(), x.device):
            rows = run[part]
            masks = self.masks(activation.flatten(0, 1)[rows].to(x.dtype), x.shape[2:])
            inputs, target, extra = forwards.rows(image[rows])
            # channels-last runs a CPU convolutional network about 1.5x faster; same values
            masked = (inputs[0] * masks).contiguous(memory_format=torch.channels_last)
            found = scores_of(forwards, (masked, *inputs[1:]), target, extra, edited)
            scores[rows] = found.to(scores.dtype)
            self.report(part.stop, len(run))
        scores[constant] = scores[first[image[constant]]]
        return self.weights_from_scores(scores.view(n, c))


class ChannelEditCam(PerturbationCam):
    r"""Channel weights from ``y``, the target's score, and ``y_k``, its score with the layer's
    output replaced by ``A`` with channel ``k`` edited; a subclass states :meth:`edit`,
    :attr:`edit_name` and :meth:`weights_from_scores`.

    The edited tensors go through the layers after this one only, the layers before it running
    once per chunk on one image, unless a check of two unedited rows finds that the model needs
    its batch whole after the layer: then every row runs from the input, with a warning saying
    why (the maps are the same, the run slower).
    """

    @abc.abstractmethod
    def edit(self, activation: Tensor, channels: slice) -> Tensor:
        """Copies of one image's ``A`` (``(C, H, W)``), copy ``j`` with channel
        ``channels.start + j`` edited: ``(len(channels), C, H, W)``."""

    @property
    @abc.abstractmethod
    def edit_name(self) -> str:
        """What the edited layer outputs are, for messages ("... with one channel ablated")."""

    @abc.abstractmethod
    def weights_from_scores(self, y: Tensor, edited: Tensor) -> Tensor:
        """The ``(N, C)`` weights from the scores ``y`` (``(N,)``) and ``y_k`` (``(N, C)``)."""

    def check_image_scores(self, y: Tensor) -> None:
        """Refuse image scores ``y`` that :meth:`weights_from_scores` cannot use, before any
        edited forward runs (the base refuses NaN and inf only)."""

    def channel_weights(self, activation: Tensor, forwards: Forwards) -> Tensor:
        n, c = activation.shape[:2]
        y = scores_of(forwards, *forwards.rows(torch.arange(n, device=activation.device)))
        if not bool(torch.isfinite(y).all()):
            raise ValueError(
                f"the model's score of the images is NaN or inf: {self.title} compares the "
                "scores of edited layer outputs with it"
            )
        self.check_image_scores(y)
        edited = torch.empty(n, c, device=activation.device, dtype=y.dtype)
        parts = self.chunks(c, activation[0].numel() * activation.element_size(), activation.device)
        once = self._layers_before_once(forwards, activation, y)
        for i in range(n):
            for part in parts:
                batch = self.edit(activation[i], part)
                edited[i, part] = self._rest_of_network(forwards, i, batch, once)
                self.report(i * c + part.stop, n * c)
        return self.weights_from_scores(y, edited)

    def _layers_before_once(self, forwards: Forwards, activation: Tensor, y: Tensor) -> bool:
        """Whether the layers before this one may run once for all rows of a chunk (the image
        alone in, the rows out): two unedited rows must score ``y``."""
        try:
            unedited = activation[:1].repeat(2, 1, 1, 1)
            twice = self._rest_of_network(forwards, 0, unedited, once=True, check=True)
        except (RuntimeError, ValueError, IndexError) as error:
            if isinstance(error, (EditError, torch.OutOfMemoryError)):
                raise
            reason = f"failed ({type(error).__name__}: {error})"
        else:
            if twice.shape == (2,) and bool(torch.allclose(twice, y[:1].expand(2), rtol=1e-4)):
                return True
            reason = f"scored {twice.tolist()}, not the image's {float(y[0])} twice"
        warnings.warn(
            f"{self.title} runs each of its edited rows through the whole model: the layers "
            f"after {type(self.layer).__name__} on two unedited rows of one image {reason}, so "
            "the model needs its batch whole there; the maps are the same, the run slower",
            RuntimeWarning,
            stacklevel=2,
        )
        return False

    def _rest_of_network(
        self, forwards: Forwards, i: int, batch: Tensor, once: bool, check: bool = False
    ) -> Tensor:
        """Scores of image ``i`` with the layer's output replaced by the rows of ``batch``
        (``check``: unedited rows, the model's errors passed on as they are)."""
        rows = torch.full((len(batch),), i, device=batch.device)
        inputs, target, extra = forwards.rows(rows[:1] if once else rows)
        if once:  # one image in, len(batch) rows out: a target per row
            target = forwards.target_of(rows)

        def replace(module: Module, args: Any, output: Any) -> Tensor:
            if not isinstance(output, Tensor) or output.shape[1:] != batch.shape[1:]:
                found = tuple(output.shape) if isinstance(output, Tensor) else type(output)
                raise EditError(
                    f"{self.title} writes its edited channels back as the layer's output, "
                    f"which is {found}, not the channels-first grid {tuple(batch.shape[1:])} it "
                    "weighted (a layout such as a ViT's tokens): choose a convolutional layer "
                    "(N, C, H, W), or Score-CAM"
                )
            return batch

        handle = self.layer.register_forward_hook(replace)
        edited = (
            f"{self.title}'s {self.edit_name}",
            "the edited values must be in the range the rest of the network accepts: change "
            "the method's options, or choose another method",
        )
        try:
            return scores_of(forwards, inputs, target, extra, None if check else edited)
        finally:
            handle.remove()


class EditError(ValueError):
    """A method's own refusal raised inside the model's forward (from its hook): passed on
    as it is by :func:`scores_of`."""


def scores_of(
    forwards: Forwards,
    inputs: tuple[Tensor, ...],
    target: TargetType,
    extra: tuple[Any, ...],
    edited: tuple[str, str] | None = None,
) -> Tensor:
    """One score per row of ``forward_func(*inputs, *extra)`` (no gradients), as ``(rows,)``.

    ``edited``: what the method changed in these rows (its masked inputs, its ablated channels)
    and the way out; a model that fails on them, or scores them NaN or inf (inputs outside the
    range it accepts), raises ``ValueError`` saying both.
    """
    with torch.no_grad():
        try:
            outputs = model_scores(forwards.forward_func(*inputs, *extra))
        except (RuntimeError, ValueError, IndexError) as error:
            if edited is None or isinstance(error, EditError):
                raise
            what, hint = edited
            raise ValueError(f"the model failed on {what} ({error}): {hint}") from error
        scores = forwards.score(outputs, target).reshape(outputs.shape[0], -1).sum(dim=1)
    if edited is not None and not bool(torch.isfinite(scores).all()):
        what, hint = edited
        raise ValueError(f"the model's score of {what} is NaN or inf: {hint}")
    return scores


__all__ = [
    "ChannelEditCam",
    "EditError",
    "MaskingCam",
    "PerturbationCam",
    "Progress",
    "scores_of",
]
