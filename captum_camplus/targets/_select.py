"""One tensor of a model that returns a dict, a tuple or a ``ModelOutput``."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from captum_camplus.targets._outputs import output_tensor


class OutputSelect(nn.Module):
    """The tensor at ``key`` of the wrapped model's output: ``OutputSelect(model, key)(x)`` is
    ``model(x)[key]`` for a dict or a tuple, ``getattr(model(x), key)`` for an attribute-style
    ``ModelOutput``.

    Captum selects ``target`` from a tensor; a model returning a dict (torchvision's
    segmentation models: ``{"out": ..., "aux": ...}``), a tuple or a Hugging Face ``ModelOutput``
    needs its tensor picked first. The model stays a submodule, so its layers are hooked as
    usual: ``LayerGradCam(OutputSelect(model, "out"), model.backbone.layer4)``. The tensor must
    still be ``(N, K)`` scores for an int target; segmentation logits need
    :class:`SegmentationScores`.

    Args:
        model: The model.
        key: A name (dict key or ``ModelOutput`` field) or an int position in a tuple or list.

    Raises:
        KeyError, IndexError: at the forward, a key the output does not have (the error lists
            those it has).
        TypeError: a model that returns a tensor already (use the model itself).
    """

    def __init__(self, model: nn.Module, key: str | int) -> None:
        super().__init__()
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise TypeError(f"key must be a name (str) or a position (int), got {key!r}")
        self.model = model
        self.key = key

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        output = self.model(*args, **kwargs)
        if isinstance(output, Tensor):
            raise TypeError(
                f"the model returns a tensor of shape {tuple(output.shape)}, which has no key "
                f"{self.key!r}: pass the model itself"
            )
        return output_tensor(output, self.key)

    def extra_repr(self) -> str:
        return f"key={self.key!r}"


__all__ = ["OutputSelect"]
