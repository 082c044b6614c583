"""Grad-CAM+, Grad-CAM++ and HiResCAM as drop-in siblings of ``captum.attr.LayerGradCam``.

The core of captum-camplus: the attribution classes on one shared base, the method registry,
the map helpers and the masking tools of the "see through walls" experiments. It imports only
torch, captum and numpy.

>>> from captum_camplus import LayerGradCamPlusPlus
>>> cam = LayerGradCamPlusPlus(model, model.layer4).attribute(images, target=labels)

What a method author needs is here too: :class:`CamAttribution` (subclass it, write
``weights``), :func:`register_method`, :func:`spatial_sum` and :func:`spatial_mean`; and what the
metrics build on: :class:`LayerCapture` (one forward, the layer's ``A`` and ``g`` for several
scores) and :meth:`LayerCams.maps_from_layer` (every method's map from them). The helpers that
layers built on the core use (method lookup by name, target checks, device lookup) are in
:mod:`captum_camplus.utils`.
"""

from captum_camplus.base import CamAttribution, Forwards, spatial_mean, spatial_sum
from captum_camplus.capture import LayerCapture
from captum_camplus.layouts import (
    ChannelsFirstLayout,
    ChannelsLastLayout,
    FunctionLayout,
    Layout,
    LayoutSpec,
    TokenLayout,
)
from captum_camplus.maps import normalize_maps, upsample_and_normalize
from captum_camplus.methods import (
    AlphaDiagnostics,
    AlphaOptions,
    ChannelEditCam,
    LayerAblationCam,
    LayerEigenCam,
    LayerEigenGradCam,
    LayerElementwiseGradCam,
    LayerGradCam,
    LayerGradCamPlus,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    LayerLayerCam,
    LayerScoreCam,
    LayerXGradCam,
    MaskingCam,
    PerturbationCam,
    alpha_diagnostics,
    grad_cam_plus_plus_alphas,
)
from captum_camplus.multi import LayerCams
from captum_camplus.registry import (
    ALL,
    DEFAULT_METHODS,
    METHODS,
    register_method,
    unregister_method,
)

__version__ = "0.1.0"

__all__ = [
    "Forwards",
    "ALL",
    "DEFAULT_METHODS",
    "METHODS",
    "PerturbationCam",
    "MaskingCam",
    "ChannelEditCam",
    "AlphaDiagnostics",
    "AlphaOptions",
    "CamAttribution",
    "ChannelsFirstLayout",
    "ChannelsLastLayout",
    "FunctionLayout",
    "LayerCams",
    "LayerCapture",
    "LayerGradCam",
    "LayerGradCamPlus",
    "LayerGradCamPlusPlus",
    "LayerAblationCam",
    "LayerEigenCam",
    "LayerEigenGradCam",
    "LayerElementwiseGradCam",
    "LayerHiResCam",
    "LayerLayerCam",
    "LayerScoreCam",
    "LayerXGradCam",
    "Layout",
    "LayoutSpec",
    "TokenLayout",
    "__version__",
    "alpha_diagnostics",
    "grad_cam_plus_plus_alphas",
    "normalize_maps",
    "register_method",
    "spatial_mean",
    "spatial_sum",
    "unregister_method",
    "upsample_and_normalize",
]
