"""EigenCAM (Muhammad & Yeasin 2020): the activations projected on their first principal component.

References:
- Muhammad & Yeasin (2020), "Eigen-CAM: class activation map using principal components",
  IJCNN, arXiv:2008.00299.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor
from torch.nn import Module

from captum_camplus.base import CamAttribution
from captum_camplus.layouts import LayoutSpec
from captum_camplus.methods.principal import principal_direction, principal_terms
from captum_camplus.registry import register_method


class _Eigen(CamAttribution):
    """The two EigenCAMs: ``centred`` (default False, the paper) is pytorch-grad-cam's variant."""

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layer: Module,
        device_ids: list[int] | None = None,
        *,
        centred: bool = False,
        layout: LayoutSpec = None,
    ) -> None:
        super().__init__(forward_func, layer, device_ids, layout=layout)
        self.centred = centred


@register_method("EigenCAM", default=False)
class LayerEigenCam(_Eigen):
    r"""EigenCAM: channel weights :math:`v_1` of the activations (Muhammad & Yeasin).

    .. math:: L = \sum_k v_{1,k} A^k, \quad A = U \Sigma V^T

    No gradient is used. ``centred=True``: :math:`\sum_k v_{1,k} (A^k - \bar A^k)` with ``v_1``
    of the centred ``A``, as pytorch-grad-cam computes it.
    """

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        return principal_direction(activation, self.centred)

    def terms(self, activation: Tensor, gradient: Tensor) -> Tensor:
        return principal_terms(activation, self.centred)
