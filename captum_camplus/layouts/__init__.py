"""Layer layouts: how a layer's tensor becomes the ``(N, C, *grid)`` tensor the CAM rules read.

A convolution outputs ``(N, C, H, W)``, which the weighting rules take as it is. A vision
transformer's block outputs tokens ``(N, P + H*W, D)``: ``P`` prefix tokens (class,
distillation, register tokens) before the ``H x W`` patch grid; a Swin stage or a ConvNeXt block
in torchvision and timm outputs channels-last ``(N, H, W, C)``. A :class:`Layout` turns such a
tensor into ``(N, C, H, W)`` (prefix tokens dropped, grid restored), and the same transform is
applied to the activations and to their gradients, so every method weights the patch grid only
and returns ``(N, 1, H, W)`` maps. The transforms are views: no copy, no extra pass.

Every CAM class takes ``layout=`` (see :func:`resolve_layout`)::

    LayerGradCamPlusPlus(vit, vit.blocks[-1].norm1, layout="tokens")  # counts from the model
    LayerCams(swin, swin.layers[-1].blocks[-1].norm1, layout="channels_last")
    LayerHiResCam(model, layer, layout=reshape_transform)  # a pytorch-grad-cam callback
    LayerCams(model, layer, layout="auto")  # the one reading of the shapes, model-confirmed

**Readings.** For a layer tensor and the 4-D image input ``(N, C_in, H, W)`` it came from, the
shapes admit these readings (:func:`shape_readings`):

* channels first ``(N, C, h, w)`` and channels last ``(N, h, w, C)``, where ``(h, w)`` follows
  the image: ``h <= H``, ``w <= W`` and the aspect of the image within one grid cell
  (``|w - W h / H| <= 1`` and ``|h - H w / W| <= 1``), so a grid on a 256 x 64 image is not
  square;
* tokens ``(N, P + gh * gw, D)``, ``0 <= P <= 8`` prefix tokens (the model's count where it has
  one) and ``(gh, gw) = (H / p, W / p)`` for a patch size ``p`` that divides both sides; only if
  no such reading exists and the model states ``P``, ``p`` that leaves a remainder (input
  padded or cropped: ``gh, gw`` both rounded up or both down).

A reading is used only when something confirms it. The model's attributes, where present,
confirm them (:class:`ModelFacts`); a 4-D tensor whose
order the modules state (a convolution, normalisation or pooling over ``(N, C, H, W)`` that
outputs it, directly or before element-wise modules of an ``nn.Sequential``; torchvision's
``Permute`` modules; timm's ``output_fmt``) is read as they say. The attributes: timm
(``num_prefix_tokens``, ``patch_embed.patch_size``, ``output_fmt``), torchvision
(``VisionTransformer.class_token`` / ``patch_size``, the ``Permute`` modules of Swin and
ConvNeXt), Hugging Face (``config.patch_size``; the class, distillation and register tokens of
``embeddings``), open_clip (``class_embedding``, ``patch_size``). They are found on the module
that holds the layer, also behind a wrapper (``nn.Sequential``, ``DataParallel``, a lambda or
``functools.partial`` that calls the model); CaiT's and XCiT's blocks before the class-attention
blocks have no class token; a hybrid's ``patch_embed`` gives its grid, not a patch size. Hiera
(timm, Hugging Face) keeps tokens in mask-unit order: they are read by the model's own re-roll
(:class:`RerollLayout`) and by nothing else. Where no attribute says, the locality probe
(:mod:`._probe`, once per layer, input size and reading, cached) confirms a reading whose cells
respond to their own image regions, or none.

``"auto"`` uses the one confirmed reading; several, none, or none confirmed raise an error that
lists the readings and the ``layout=`` that selects each. Without ``layout=`` (Captum's
channels-first reading), a tensor that contradicts it for its input (3-D tokens of a 4-D
image, ``(N, h, w, C)``, a partitioned ``(N, windows, tokens, C)``) raises an error naming the
layout to pass; 1-D models (``(N, C, L)`` inputs) are read as before. A named
``"channels_last"`` or ``TokenLayout`` with a grid that the shapes contradict (other readings
fit the input, its own does not: ``"channels_last"`` on a conv's ``(N, C, h, w)``) raises an
error that lists the readings that fit (:func:`check_reading`). Under any layout, a tensor
whose first dimension is not the batch (windowed attention, a sequence-first ``(T, N, D)``
tensor) is refused with the reason.

The package, by reason to change: :mod:`._types` (the layout types and the check of a named
layout), :mod:`._model` (what timm, torchvision, Hugging Face and open_clip attributes say),
:mod:`._shapes` (arithmetic on shapes), :mod:`._probe` (the locality probe) and
:mod:`._resolve` (the ``"auto"`` and default policies and :func:`resolve_layout`); they import
each other in that order, from the model and shapes up.
"""

from captum_camplus.layouts._model import ModelFacts, model_facts
from captum_camplus.layouts._resolve import (
    LAYOUT_NAMES,
    AutoLayout,
    DefaultLayout,
    resolve_layout,
)
from captum_camplus.layouts._shapes import (
    MAX_PREFIX_TOKENS,
    InputShape,
    check_batch,
    patch_grids,
)
from captum_camplus.layouts._types import (
    ChannelsFirstLayout,
    ChannelsLastLayout,
    FunctionLayout,
    Layout,
    LayoutSpec,
    Reading,
    RerollLayout,
    TokenLayout,
    check_reading,
    shape_readings,
)

__all__ = [
    "LAYOUT_NAMES",
    "MAX_PREFIX_TOKENS",
    "AutoLayout",
    "ChannelsFirstLayout",
    "ChannelsLastLayout",
    "DefaultLayout",
    "FunctionLayout",
    "InputShape",
    "Layout",
    "LayoutSpec",
    "ModelFacts",
    "Reading",
    "RerollLayout",
    "TokenLayout",
    "check_batch",
    "check_reading",
    "model_facts",
    "patch_grids",
    "resolve_layout",
    "shape_readings",
]
