"""Helpers for layers built on the core, such as ``metrics``: semi-public.

A user of the attribution classes needs none of this (see :mod:`captum_camplus`). A package that
builds on the core, as this distribution's ``metrics`` does, imports these names from here: they
are kept stable within a minor version, and each lives in the module named below (this module
only re-exports them).

Inputs, targets and outputs (:mod:`captum_camplus.checks`):

- :func:`check_target`: a Captum ``target`` checked against the batch size before any pass
  (numpy values converted).
- :func:`model_scores`: the score tensor of a model's output (the ``.logits`` of a Hugging Face
  ``ModelOutput``).

Maps (:mod:`captum_camplus.maps`):

- :func:`require_spatial`: a ``ValueError`` for a map with no spatial dimensions.

Models (:mod:`captum_camplus.modules`):

- :func:`cpu_forward_rows`: rows per forward when a CPU runs many forwards of one model
  (:data:`CPU_FORWARD_BYTES` of input each).
- :func:`find_layer`: a layer given as a module or by its dotted name.
- :func:`module_device`: the device of a model's first parameter or buffer (a fallback for a
  function).
- :func:`evaluation_mode`: a block run with the model in eval mode, each submodule's own mode
  restored after it.

Layouts (:mod:`captum_camplus.layouts`):

- :func:`resolve_layout`: the :class:`~captum_camplus.Layout` of a ``layout=`` argument.

Methods by name (:mod:`captum_camplus.registry`, :mod:`captum_camplus.multi`):

- :func:`method_name`, :func:`method_class`: a method's display name and class from any of its
  names (matched leniently); :func:`resolve_methods`: a list of names (None: the defaults,
  ``"all"``: every registered method) as display names.
- :func:`load_plugins`: import the methods of other installed packages (every read of the
  registry does it once).
- :data:`ENTRY_POINT_GROUP`: the entry-point group of those methods.
- :data:`MethodFactory`: what :class:`~captum_camplus.LayerCams` accepts as a method (a class,
  or a factory such as ``functools.partial(LayerGradCamPlusPlus, alpha="paper")``).
"""

from captum_camplus.checks import check_target, model_scores
from captum_camplus.layouts import resolve_layout
from captum_camplus.maps import require_spatial
from captum_camplus.modules import (
    CPU_FORWARD_BYTES,
    cpu_forward_rows,
    evaluation_mode,
    find_layer,
    module_device,
)
from captum_camplus.multi import MethodFactory
from captum_camplus.registry import (
    ENTRY_POINT_GROUP,
    load_plugins,
    method_class,
    method_name,
    resolve_methods,
)

__all__ = [
    "CPU_FORWARD_BYTES",
    "ENTRY_POINT_GROUP",
    "MethodFactory",
    "check_target",
    "cpu_forward_rows",
    "evaluation_mode",
    "find_layer",
    "load_plugins",
    "method_class",
    "method_name",
    "model_scores",
    "module_device",
    "resolve_methods",
    "require_spatial",
    "resolve_layout",
]
