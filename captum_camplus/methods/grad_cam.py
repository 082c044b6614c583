"""Grad-CAM (Selvaraju et al. 2017), on the shared base.

References:
- Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients",
  arXiv:2205.10838.
- Selvaraju, Cogswell, Das, Vedantam, Parikh & Batra (2017), "Grad-CAM: Visual explanations from
  deep networks via gradient-based localization", ICCV, arXiv:1610.02391.
"""

from __future__ import annotations

from torch import Tensor

from captum_camplus.base import CamAttribution, spatial_mean
from captum_camplus.registry import register_method


@register_method("Grad-CAM")
class LayerGradCam(CamAttribution):
    r"""Grad-CAM: channel weights are the spatial mean of the gradients (Lerma & Lucas, eq. 1).

    .. math:: w_k = \frac{1}{Z} \sum_{ij} \frac{\partial S}{\partial A^k_{ij}}

    Numerically the same as :class:`captum.attr.LayerGradCam`; it lives on this package's base so
    that it can be computed with the other methods from one pass (:class:`LayerCams`).
    """

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        return spatial_mean(gradient)
