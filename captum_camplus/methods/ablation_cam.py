"""Ablation-CAM (Desai & Ramaswamy 2020), batched.

References:
- Desai & Ramaswamy (2020), "Ablation-CAM: visual explanations for deep convolutional network
  via gradient-free localization", WACV.
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD,
  arXiv:2404.01964.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import Module

from captum_camplus.base import Forwards
from captum_camplus.methods.perturbation import EditError, PerturbationCam, scores_of
from captum_camplus.registry import register_method


@register_method("Ablation-CAM", default=False)
class LayerAblationCam(PerturbationCam):
    r"""Ablation-CAM: the relative drop of the score when channel ``k`` is set to 0
    (Taimeskhanov et al., definition 8).

    .. math:: w_k = \frac{y - y_k}{y}

    The ablated layer tensors go through the rest of the network; the layers before it run once
    per chunk on one image. ``ablation_value=None`` is pytorch-grad-cam's rule: 0 if the image's
    smallest activation is 0, else that minimum less 1e7. A target score of 0 is refused.
    """

    def __init__(self, *args: Any, ablation_value: float | None = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ablation_value = ablation_value

    def channel_weights(self, activation: Tensor, forwards: Forwards) -> Tensor:
        n, c = activation.shape[:2]
        y = scores_of(forwards, *forwards.rows(torch.arange(n, device=activation.device)))
        if bool((y == 0).any()):
            raise ValueError("Ablation-CAM divides by the target score, which is 0 here")
        ablated = torch.empty(n, c, device=activation.device, dtype=y.dtype)
        parts = self.chunks(c, activation[0].numel() * activation.element_size())
        once = self._once(forwards, activation, y)
        for i in range(n):
            value = self._value(activation[i])
            for part in parts:
                batch = activation[i].repeat(part.stop - part.start, 1, 1, 1)
                batch[torch.arange(len(batch)), torch.arange(part.start, part.stop)] = value
                ablated[i, part] = self._rest_of_network(forwards, i, batch, once)
                self.report(i * c + part.stop, n * c)
        return (y[:, None] - ablated) / y[:, None]

    def _value(self, activation: Tensor) -> float:
        if self.ablation_value is not None:
            return self.ablation_value
        low = float(activation.min())
        return 0.0 if low == 0 else low - 1e7

    def _once(self, forwards: Forwards, activation: Tensor, y: Tensor) -> bool:
        """Whether the layers before this one may run once for all rows of a chunk: the image
        alone in, the rows out (a check that two unablated rows give ``y``; a model that needs
        its batch whole after the layer runs every row from the input instead)."""
        try:
            twice = self._rest_of_network(forwards, 0, activation[:1].repeat(2, 1, 1, 1), True)
        except EditError:
            raise
        except (RuntimeError, ValueError):  # the rows from the input will say what failed
            return False
        return twice.shape == (2,) and bool(torch.allclose(twice, y[:1].expand(2), rtol=1e-4))

    def _rest_of_network(self, forwards: Forwards, i: int, batch: Tensor, once: bool) -> Tensor:
        """Scores of image ``i`` with the layer's output replaced by the rows of ``batch``."""
        rows = torch.full((1 if once else len(batch),), i, device=batch.device)

        def replace(module: Module, args: Any, output: Any) -> Tensor:
            if not isinstance(output, Tensor) or output.shape[1:] != batch.shape[1:]:
                found = tuple(output.shape) if isinstance(output, Tensor) else type(output)
                raise EditError(
                    f"Ablation-CAM writes its ablated channels back as the layer's output, "
                    f"which is {found}, not the channels-first grid {tuple(batch.shape[1:])} it "
                    "weighted (a layout such as a ViT's tokens): choose a convolutional layer "
                    "(N, C, H, W), or Score-CAM"
                )
            return batch

        handle = self.layer.register_forward_hook(replace)
        edited = (
            f"Ablation-CAM's layer outputs with one channel ablated (ablation_value="
            f"{self.ablation_value!r})",
            "the ablated value must be in the range the rest of the network accepts: pass "
            "another ablation_value, or choose another method",
        )
        try:
            return scores_of(forwards, *forwards.rows(rows), edited=edited)
        finally:
            handle.remove()
