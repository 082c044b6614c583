"""One module a method; each states only its weighting rule on the shared base class
(:class:`~captum_camplus.CamAttribution`) and registers itself by name."""

from captum_camplus.methods.grad_cam import LayerGradCam
from captum_camplus.methods.grad_cam_plus import LayerGradCamPlus
from captum_camplus.methods.grad_cam_plus_plus import (
    AlphaDiagnostics,
    AlphaOptions,
    LayerGradCamPlusPlus,
    alpha_diagnostics,
    grad_cam_plus_plus_alphas,
)
from captum_camplus.methods.hires_cam import LayerHiResCam

__all__ = [
    "AlphaDiagnostics",
    "AlphaOptions",
    "LayerGradCam",
    "LayerGradCamPlus",
    "LayerGradCamPlusPlus",
    "LayerHiResCam",
    "alpha_diagnostics",
    "grad_cam_plus_plus_alphas",
]
