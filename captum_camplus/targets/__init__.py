"""Targets beyond classification: forward-function wrappers that turn an output into scores.

Captum explains one score per example, chosen from ``(N, K)`` scores by ``target=k``. A
segmentation model returns ``(N, K, H, W)`` logits, an encoder an embedding, torchvision and
Hugging Face models a dict or a ``ModelOutput``: each wrapper here is an ``nn.Module`` that runs
the model and returns ``(N, K)`` scores, so ``target=k`` picks one. The wrapper holds the model
as a submodule, so the model's layers stay reachable for the hooks:

>>> from captum_camplus import LayerGradCamPlusPlus
>>> from captum_camplus.targets import SegmentationScores
>>> cams = LayerGradCamPlusPlus(SegmentationScores(model), model.backbone.layer4)
>>> maps = cams.attribute(images, target=15)  # class 15 where the model predicts it

- :class:`OutputSelect`: one tensor of a dict, tuple or ``ModelOutput`` output.
- :class:`SegmentationScores`: the mean probability of each class over a mask's pixels.
- :class:`SimilarityScores`: the cosine similarity of an embedding to reference embeddings.
- :class:`DetectionScores`: for each reference box, the score of the detector's best-matching
  detection of its label (torchvision detectors); :meth:`DetectionScores.image_maps` brings
  layer maps from the detector's resized, padded canvas onto the user's images.

Each wrapper but :class:`OutputSelect` states what its scores are in the class attribute
``scores_kind`` (``"probabilities"``, ``"cosine"``); the metrics read it and score them as they
are, with no softmax on top.

An int target on an output that is not ``(N, K)`` is refused by every CAM class, with an error
pointing here (see :func:`captum_camplus.checks.check_output`). Like the rest of the core, this
package imports only torch, captum and numpy: torchvision and Hugging Face outputs are read by
duck typing (:func:`output_tensor`).
"""

from captum_camplus.targets._detection import DetectionScores
from captum_camplus.targets._outputs import OutputKey, output_tensor
from captum_camplus.targets._segmentation import SegmentationScores
from captum_camplus.targets._select import OutputSelect
from captum_camplus.targets._similarity import SimilarityScores

__all__ = [
    "DetectionScores",
    "OutputKey",
    "OutputSelect",
    "SegmentationScores",
    "SimilarityScores",
    "output_tensor",
]
