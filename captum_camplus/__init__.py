"""Grad-CAM+, Grad-CAM++ and HiResCAM as drop-in siblings of ``captum.attr.LayerGradCam``.

The core of captum-camplus: the attribution classes on one shared base, the method registry,
the map helpers and the masking tools of the "see through walls" experiments. It imports only
torch, captum and numpy.

>>> from captum_camplus import LayerGradCamPlusPlus
>>> cam = LayerGradCamPlusPlus(model, model.layer4).attribute(images, target=labels)
"""

from captum_camplus.base import CamAttribution
from captum_camplus.layouts import (
    ChannelsFirstLayout,
    ChannelsLastLayout,
    FunctionLayout,
    Layout,
    TokenLayout,
)
from captum_camplus.maps import normalize_maps, upsample_and_normalize
from captum_camplus.methods import (
    AlphaDiagnostics,
    AlphaOptions,
    LayerGradCam,
    LayerGradCamPlus,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    alpha_diagnostics,
    grad_cam_plus_plus_alphas,
)
from captum_camplus.multi import LayerCams, MethodFactory
from captum_camplus.registry import METHODS, method_class, method_name, register_method

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "AlphaDiagnostics",
    "AlphaOptions",
    "CamAttribution",
    "ChannelsFirstLayout",
    "ChannelsLastLayout",
    "FunctionLayout",
    "Layout",
    "LayerCams",
    "LayerGradCam",
    "LayerGradCamPlus",
    "LayerGradCamPlusPlus",
    "LayerHiResCam",
    "MethodFactory",
    "TokenLayout",
    "alpha_diagnostics",
    "grad_cam_plus_plus_alphas",
    "method_class",
    "method_name",
    "normalize_maps",
    "register_method",
    "upsample_and_normalize",
]
