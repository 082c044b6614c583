"""HiResCAM (Draelos & Carin 2021), as defined in paper 003."""

from __future__ import annotations

from torch import Tensor

from captum_camplus.base import CamAttribution
from captum_camplus.registry import register_method


@register_method("HiResCAM")
class LayerHiResCam(CamAttribution):
    r"""HiResCAM: element-wise gradient times activation, summed over channels (003 definition 6).

    .. math:: L = \sum_k \frac{\partial S}{\partial A^k} \odot A^k

    No spatial averaging, so a position the score does not depend on (gradient 0) gets 0: the map
    cannot "see through walls" (003 section 3). It equals the channel sum of Captum's
    ``LayerGradientXActivation``, and Grad-CAM when the head is global average pooling plus a
    linear layer.
    """

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        return gradient
