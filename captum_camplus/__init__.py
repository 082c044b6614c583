"""Grad-CAM+, Grad-CAM++ and HiResCAM as drop-in siblings of ``captum.attr.LayerGradCam``.

>>> from captum_camplus import LayerGradCamPlusPlus
>>> cam = LayerGradCamPlusPlus(model, model.layer4).attribute(images, target=labels)
"""

from captum_camplus.base import LayerCam
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
    LayerGradCam,
    LayerGradCamPlus,
    LayerGradCamPlusPlus,
    LayerHiResCam,
)
from captum_camplus.multi import METHODS, LayerCams, method_class

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "AlphaDiagnostics",
    "ChannelsFirstLayout",
    "ChannelsLastLayout",
    "FunctionLayout",
    "Layout",
    "LayerCam",
    "LayerCams",
    "LayerGradCam",
    "LayerGradCamPlus",
    "LayerGradCamPlusPlus",
    "LayerHiResCam",
    "TokenLayout",
    "method_class",
    "normalize_maps",
    "upsample_and_normalize",
]
