"""One forward pass that keeps a layer's output, and its gradients for one or more scores.

Every gradient CAM needs the same two tensors: the layer's activations ``A`` and the gradients
``g = dS/dA`` of a score ``S``. :class:`LayerCapture` gets them with the least work: one forward
that records only what follows the layer (the operations before it run as in inference, and
their activations are not kept), then one ``autograd.grad`` per score down to ``A`` only. Several
scores of the same forward, e.g. a class's logit and its softmax probability (the two columns of
Lerma & Lucas, tables 1-2), share that forward.

>>> capture = LayerCapture(model, model.layer4, images)
>>> logit = capture.outputs.gather(1, labels[:, None])
>>> probability = capture.outputs.softmax(dim=1).gather(1, labels[:, None])
>>> g_logit, g_probability = capture.gradients(logit, probability)
>>> maps = LayerCams(model, model.layer4).maps_from_layer(capture.activation, g_logit)

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.nn import Module

from captum_camplus.base import check_attribution_inputs
from captum_camplus.checks import (
    check_hookable,
    check_inputs,
    model_scores,
    non_tensor_output_error,
    not_called_error,
    unreached_layer_error,
)

#: PyTorch's error for an in-place change, with gradients on, of a view made without them.
_NO_GRAD_VIEW = "created in no_grad mode"


class LayerCapture:
    """Run ``forward_func(inputs, *additional_forward_args)`` once, keeping ``layer``'s output.

    The layer's output becomes :attr:`activation`, the leaf of a graph of what follows it: the
    forward runs without gradients up to the layer and records from there on, so a capture
    costs little more than an inference forward. As in Captum, the network continues with a
    copy of ``A`` (in-place operations after the layer cannot change it), and a layer called
    several times is read at its last call. Where the model modifies in place, after the layer,
    a view made before it (PyTorch refuses that once recording starts mid-forward), the forward
    runs again recording throughout.

    Args:
        forward_func: The model, or any callable returning the scores.
        layer: A module called by the forward, returning a tensor (or a tuple of tensors).
        inputs: The batch (a tensor, or a tuple of tensors passed as positional arguments).
        additional_forward_args: Further positional arguments of ``forward_func``.

    Attributes:
        outputs: What ``forward_func`` returned (the ``.logits`` of a Hugging Face
            ``ModelOutput`` or of any object with a tensor ``.logits``), attached to the graph of
            what follows ``A``.
        activations: The layer's output tensors (``requires_grad``; detach them for arithmetic).
        layer: The layer.

    Raises:
        ValueError: an empty batch, non-finite inputs, a layer the forward never calls or that
            returns something other than tensors.
        RuntimeError: inside ``torch.inference_mode()``.
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        layer: Module,
        inputs: Tensor | tuple[Tensor, ...],
        additional_forward_args: tuple[Any, ...] = (),
    ) -> None:
        check_hookable(forward_func, layer)
        check_inputs(inputs)
        batch = inputs if isinstance(inputs, tuple) else (inputs,)
        check_attribution_inputs(batch, None)
        kept: list[tuple[Tensor, ...]] = []

        def keep(module: Module, args: Any, output: Any) -> Tensor | tuple[Tensor, ...]:
            tensors = output if isinstance(output, tuple) else (output,)
            if not tensors or not all(isinstance(t, Tensor) for t in tensors):
                raise non_tensor_output_error(module, output)
            leaves = tuple(t.detach().requires_grad_() for t in tensors)
            kept[:] = [leaves]
            torch.set_grad_enabled(True)  # record from here on; the no_grad block restores
            copies = tuple(leaf.clone() for leaf in leaves)
            return copies if isinstance(output, tuple) else copies[0]

        handle = layer.register_forward_hook(keep)
        try:
            try:
                with torch.no_grad():
                    outputs = forward_func(*batch, *additional_forward_args)
            except RuntimeError as error:
                # A tensor made before the layer without gradients (a view) that the model
                # modifies in place after it (timm GhostNet: ``x += shortcut(inputs)``): the
                # forward again, recording throughout; A and g are the same.
                if not kept or _NO_GRAD_VIEW not in str(error):
                    raise
                kept.clear()
                with torch.enable_grad():
                    outputs = forward_func(*batch, *additional_forward_args)
        finally:
            handle.remove()
        if not kept:
            raise not_called_error(layer, forward_func)
        self.outputs = model_scores(outputs)
        self.activations = kept[0]
        self.layer = layer

    @property
    def activation(self) -> Tensor:
        """``A``, the layer's one output tensor (``ValueError`` for a layer returning several)."""
        if len(self.activations) != 1:
            raise ValueError(
                f"the layer {type(self.layer).__name__} returns {len(self.activations)} tensors: "
                "CAMs of the metrics need a layer that returns one tensor"
            )
        return self.activations[0]

    def gradients(self, *scores: Tensor, retain_graph: bool = False) -> tuple[Tensor, ...]:
        """``g = dS/dA`` for each score ``S`` computed from :attr:`outputs`, in order.

        Compute the scores with gradients enabled (inside ``torch.no_grad()``, under
        ``torch.enable_grad()``), so that they join the recorded graph. A score may be a
        scalar or one value per example: it is summed, and since each example's score depends
        on its own ``A`` only (a model in eval mode), one ``autograd.grad`` gives every
        example's gradient. The graph is freed after the last score unless ``retain_graph``;
        the gradients come back detached.

        Raises:
            ValueError: a score that does not depend on the layer's output, or a layer with
                several output tensors (use :meth:`layer_gradients`).
        """
        self.activation  # noqa: B018 (one output tensor, or the error that says why not)
        return tuple(g for (g,) in self.layer_gradients(*scores, retain_graph=retain_graph))

    def layer_gradients(
        self, *scores: Tensor, retain_graph: bool = False
    ) -> tuple[tuple[Tensor, ...], ...]:
        """:meth:`gradients` for a layer with several output tensors: per score, one gradient
        per tensor of :attr:`activations`."""
        if not scores:
            raise TypeError("gradients() needs at least one score")
        last = len(scores) - 1
        found = []
        for number, score in enumerate(scores):
            try:
                with torch.enable_grad():
                    total = score.sum()
                gradients = torch.autograd.grad(
                    total, self.activations, retain_graph=retain_graph or number < last
                )
            except RuntimeError as error:
                raise (unreached_layer_error(error, self.layer) or error) from error
            found.append(tuple(gradients))
        return tuple(found)


__all__ = ["LayerCapture"]
