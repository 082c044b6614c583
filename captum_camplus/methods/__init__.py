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

# the catalogue beyond the default four (registered with default=False)
from captum_camplus.methods.xgrad_cam import LayerXGradCam  # isort: skip
from captum_camplus.methods.layer_cam import LayerLayerCam  # isort: skip
from captum_camplus.methods.element_wise_grad_cam import LayerElementwiseGradCam  # isort: skip
from captum_camplus.methods.eigen_cam import LayerEigenCam  # isort: skip
from captum_camplus.methods.eigen_grad_cam import LayerEigenGradCam  # isort: skip
from captum_camplus.methods.score_cam import LayerScoreCam  # isort: skip
from captum_camplus.methods.ablation_cam import LayerAblationCam  # isort: skip
from captum_camplus.methods.perturbation import (  # isort: skip
    ChannelEditCam,
    MaskingCam,
    PerturbationCam,
)

__all__ = [
    "ChannelEditCam",
    "LayerAblationCam",
    "LayerScoreCam",
    "MaskingCam",
    "PerturbationCam",
    "AlphaDiagnostics",
    "AlphaOptions",
    "LayerGradCam",
    "LayerGradCamPlus",
    "LayerGradCamPlusPlus",
    "LayerEigenCam",
    "LayerEigenGradCam",
    "LayerElementwiseGradCam",
    "LayerHiResCam",
    "LayerLayerCam",
    "LayerXGradCam",
    "alpha_diagnostics",
    "grad_cam_plus_plus_alphas",
]
