"""Score-CAM (Wang et al. 2020), batched.

References:
- Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu (2020), "Score-CAM: score-weighted visual
  explanations for convolutional neural networks", CVPR workshops, arXiv:1910.01279.
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD,
  arXiv:2404.01964.
"""

from __future__ import annotations

from torch import Tensor

from captum_camplus.methods.perturbation import MaskingCam
from captum_camplus.registry import register_method


@register_method("Score-CAM", default=False)
class LayerScoreCam(MaskingCam):
    r"""Score-CAM: softmax over channels of the scores of the input masked by each channel
    (Taimeskhanov et al., definition 7; the masks ``H^k`` are :class:`MaskingCam`'s).

    .. math:: w = \mathrm{softmax}_k\big(f(X \odot H^k) - f(X)\big)

    The baseline ``f(X)`` cancels in the softmax, so it is not computed.
    """

    def weights_from_scores(self, scores: Tensor) -> Tensor:
        return scores.softmax(dim=1)
