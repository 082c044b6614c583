"""EigenGrad-CAM: EigenCAM (Muhammad & Yeasin 2020, arXiv:2008.00299) on gradient times activation,
as pytorch-grad-cam defines it; class-discriminative through the gradient."""

from __future__ import annotations

from torch import Tensor

from captum_camplus.methods.eigen_cam import _Eigen
from captum_camplus.methods.principal import principal_direction, principal_terms
from captum_camplus.registry import register_method


@register_method("EigenGrad-CAM", default=False)
class LayerEigenGradCam(_Eigen):
    r"""EigenGrad-CAM: ``X = g (.) A`` projected on its first principal component ``v_1``.

    .. math:: L = \sum_k v_{1,k}\, g^k \odot A^k, \quad g \odot A = U \Sigma V^T

    Element-wise weights :math:`W^k = v_{1,k} g^k`; ``centred=True`` as in
    :class:`~captum_camplus.methods.eigen_cam.LayerEigenCam`. Sign rule of
    :func:`~captum_camplus.methods.principal.principal_direction`.
    """

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        return principal_direction(gradient * activation, self.centred) * gradient

    def terms(self, activation: Tensor, gradient: Tensor) -> Tensor:
        return principal_terms(gradient * activation, self.centred)
