"""The base of the perturbation family (Score-CAM, Ablation-CAM): channel weights from further
forwards of the model, run in chunks on the maps' device under a memory budget.

References:
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD,
  arXiv:2404.01964 (appendix A, definitions 7-8).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import torch
from captum._utils.common import _format_additional_forward_args, _format_tensor_into_tuples
from captum._utils.typing import TargetType
from captum.log import log_usage
from torch import Tensor
from torch.nn import Module

from captum_camplus.base import CamAttribution, Forwards, check_flags
from captum_camplus.capture import LayerCapture
from captum_camplus.checks import check_output, check_target, model_scores
from captum_camplus.layouts import DefaultLayout, LayoutSpec

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
            cam = torch.einsum("nchw,nc->nhw", a, w)[:, None] if sum_ else w[..., None, None] * a
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

    def chunks(self, total: int, row_bytes: int) -> list[slice]:
        """Slices of ``range(total)`` whose rows of ``row_bytes`` fit the memory budget."""
        per_chunk = self.memory_budget // max(row_bytes, 1)
        if per_chunk < 1:
            raise ValueError(
                f"memory_budget={self.memory_budget} bytes is too small for one forward of "
                f"{type(self).__name__}, which takes {row_bytes} bytes: pass memory_budget >= "
                f"{row_bytes}"
            )
        return [slice(s, min(s + per_chunk, total)) for s in range(0, total, per_chunk)]

    def report(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)


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


__all__ = ["EditError", "PerturbationCam", "Progress", "scores_of"]
