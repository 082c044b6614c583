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

from captum_camplus.methods.perturbation import ChannelEditCam
from captum_camplus.registry import register_method


@register_method("Ablation-CAM", default=False)
class LayerAblationCam(ChannelEditCam):
    r"""Ablation-CAM: the relative drop of the score when channel ``k`` is set to the ablation
    value (Taimeskhanov et al., definition 8).

    .. math:: w_k = \frac{y - y_k}{y}

    ``ablation_value=None`` is pytorch-grad-cam's rule: 0 if the image's smallest activation is
    0, else that minimum less 1e7. A target score of 0 is refused.
    """

    def __init__(self, *args: Any, ablation_value: float | None = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ablation_value = ablation_value

    @property
    def edit_name(self) -> str:
        return f"layer outputs with one channel ablated (ablation_value={self.ablation_value!r})"

    def edit(self, activation: Tensor, channels: slice) -> Tensor:
        value = self.ablation_value
        if value is None:
            low = float(activation.min())
            value = 0.0 if low == 0 else low - 1e7
        batch = activation.repeat(channels.stop - channels.start, 1, 1, 1)
        batch[torch.arange(len(batch)), torch.arange(channels.start, channels.stop)] = value
        return batch

    def check_image_scores(self, y: Tensor) -> None:
        zero = torch.nonzero(y == 0).flatten().tolist()
        if zero:
            raise ValueError(
                f"Ablation-CAM divides by the target score, which is 0 for images {zero}"
            )

    def weights_from_scores(self, y: Tensor, edited: Tensor) -> Tensor:
        return (y[:, None] - edited) / y[:, None]
