"""Element-wise Grad-CAM: the positive part of gradient times activation, summed over channels.

pytorch-grad-cam's ``GradCAMElementWise``; HiResCAM (Draelos & Carin 2020, arXiv:2011.08891) with
a ReLU on each term before the channel sum.
"""

from __future__ import annotations

from torch import Tensor

from captum_camplus.base import CamAttribution
from captum_camplus.registry import register_method


@register_method("Element-wise Grad-CAM", "GradCAMElementWise", default=False)
class LayerElementwiseGradCam(CamAttribution):
    r"""Element-wise Grad-CAM: ReLU of each term of HiResCAM before the channel sum.

    .. math:: L = \sum_k \mathrm{ReLU}\Big(\frac{\partial S}{\partial A^k} \odot A^k\Big)

    As a weighting rule: :math:`W^k = g^k \cdot [g^k A^k > 0]`, so :math:`W^k A^k` is exactly
    :math:`\mathrm{ReLU}(g^k A^k)`.
    """

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        return gradient * (gradient * activation > 0)
