"""HiResCAM (Draelos & Carin 2020), as defined in Taimeskhanov et al.

References:
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD,
  arXiv:2404.01964.
- Draelos & Carin (2020), "Use HiResCAM instead of Grad-CAM for faithful explanations of
  convolutional neural networks", arXiv:2011.08891.
"""

from __future__ import annotations

from torch import Tensor

from captum_camplus.base import CamAttribution
from captum_camplus.registry import register_method


@register_method("HiResCAM")
class LayerHiResCam(CamAttribution):
    r"""HiResCAM: gradient times activation, summed over channels (Taimeskhanov et al., def. 6).

    .. math:: L = \sum_k \frac{\partial S}{\partial A^k} \odot A^k

    No spatial averaging, so a position the score does not depend on (gradient 0) gets 0: the map
    cannot "see through walls" (Taimeskhanov et al., section 3). It equals the channel sum of
    Captum's ``LayerGradientXActivation``, and Grad-CAM when the head is global average pooling plus
    a linear layer.
    """

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        return gradient
