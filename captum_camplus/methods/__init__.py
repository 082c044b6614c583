"""One module a method; each states only its weighting rule on :class:`captum_camplus.LayerCam`."""

from captum_camplus.methods.grad_cam import LayerGradCam
from captum_camplus.methods.grad_cam_plus import LayerGradCamPlus
from captum_camplus.methods.grad_cam_plus_plus import AlphaDiagnostics, LayerGradCamPlusPlus
from captum_camplus.methods.hires_cam import LayerHiResCam

__all__ = [
    "AlphaDiagnostics",
    "LayerGradCam",
    "LayerGradCamPlus",
    "LayerGradCamPlusPlus",
    "LayerHiResCam",
]
