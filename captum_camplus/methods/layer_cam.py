"""LayerCAM (Jiang et al. 2021), on the shared base.

References:
- Jiang, Zhang, Hou, Cheng & Wei (2021), "LayerCAM: exploring hierarchical class activation maps
  for localization", IEEE Transactions on Image Processing 30, 5875-5888.
"""

from __future__ import annotations

from torch import Tensor

from captum_camplus.base import CamAttribution
from captum_camplus.registry import register_method


@register_method("LayerCAM", default=False)
class LayerLayerCam(CamAttribution):
    r"""LayerCAM: each position weighted by its own positive gradient (Jiang et al.).

    .. math:: L = \sum_k \mathrm{ReLU}\Big(\frac{\partial S}{\partial A^k}\Big) \odot A^k

    Element-wise weights, like HiResCAM with the negative gradients dropped.
    """

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        return gradient.clamp(min=0)
