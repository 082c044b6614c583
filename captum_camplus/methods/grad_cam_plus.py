"""Grad-CAM+: Grad-CAM with positive gradients (Lerma & Lucas 2022).

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
"""

from __future__ import annotations

from torch import Tensor

from captum_camplus.base import CamAttribution, spatial_mean
from captum_camplus.registry import register_method


@register_method("Grad-CAM+")
class LayerGradCamPlus(CamAttribution):
    r"""Grad-CAM+: channel weights are the mean positive gradients (Lerma & Lucas, eq. 3).

    .. math:: w_k = \frac{1}{Z} \sum_{ij} \mathrm{ReLU}(\partial S / \partial A^k_{ij})

    Lerma & Lucas show that Grad-CAM++ is, up to a constant factor, practically this method
    (Lerma & Lucas, eq. 14, section 4).
    """

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        return spatial_mean(gradient.clamp(min=0))
