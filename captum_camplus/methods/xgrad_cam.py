"""XGrad-CAM (Fu et al. 2020), on the shared base.

References:
- Fu, Hu, Dong, Jiang, Zhang, Cheng & Yu (2020), "Axiom-based Grad-CAM: towards accurate
  visualization and explanation of CNNs", BMVC, arXiv:2008.02312.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import Module

from captum_camplus.base import CamAttribution, spatial_sum
from captum_camplus.layouts import LayoutSpec
from captum_camplus.registry import register_method


@register_method("XGrad-CAM", "Axiom-based Grad-CAM", default=False)
class LayerXGradCam(CamAttribution):
    r"""XGrad-CAM: gradients weighted by the channel's share of its activation (Fu et al.).

    .. math::
        w_k = \sum_{ij} \frac{A^k_{ij}}{\sum_{ab} A^k_{ab} + \epsilon}
        \frac{\partial S}{\partial A^k_{ij}}

    ``eps`` is 0 by default (the paper); a channel whose activations sum to exactly 0 gets
    weight 0. pytorch-grad-cam adds ``eps=1e-7``, torchcam ``1e-8``: pass it to match them.
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layer: Module,
        device_ids: list[int] | None = None,
        *,
        eps: float = 0.0,
        layout: LayoutSpec = None,
    ) -> None:
        super().__init__(forward_func, layer, device_ids, layout=layout)
        self.eps = float(eps)

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        total = spatial_sum(activation) + self.eps
        safe = torch.where(total == 0, torch.ones_like(total), total)
        return torch.where(total == 0, 0.0, spatial_sum(gradient * activation) / safe)
