"""Score-CAM (Wang et al. 2020), batched.

References:
- Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu (2020), "Score-CAM: score-weighted visual
  explanations for convolutional neural networks", CVPR workshops, arXiv:1910.01279.
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD,
  arXiv:2404.01964.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_camplus.base import Forwards
from captum_camplus.methods.perturbation import PerturbationCam, scores_of
from captum_camplus.registry import register_method


@register_method("Score-CAM", default=False)
class LayerScoreCam(PerturbationCam):
    r"""Score-CAM: softmax over channels of the scores of the input masked by each channel
    (Taimeskhanov et al., definition 7).

    .. math:: w = \mathrm{softmax}_k\big(f(X \odot H^k) - f(X)\big), \quad
              H^k = \frac{U^k - \min U^k}{\max U^k - \min U^k}, \; U^k = \mathrm{Up}(A^k)

    ``Up`` is bilinear as in Wang et al.'s code (``align_corners=True``: pytorch-grad-cam's); a
    constant channel masks everything (``H = 0``; one forward of ``X * 0`` per image gives the
    score of all its constant channels). The baseline ``f(X)`` cancels in the softmax.
    The masked input lies between 0 and ``X``: 0 must be an input value the model accepts.
    """

    def __init__(self, *args: Any, align_corners: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.align_corners = align_corners

    def channel_weights(self, activation: Tensor, forwards: Forwards) -> Tensor:
        x = forwards.inputs[0]
        if not x.is_floating_point() or x.dim() != 4:
            raise ValueError(
                f"Score-CAM multiplies the input images by masks in [0, 1]: it needs float "
                f"(N, C, H, W) inputs, got {x.dtype} {tuple(x.shape)}"
            )
        n, c = activation.shape[:2]
        index = torch.arange(n * c, device=activation.device)
        image = index // c
        # a constant channel masks the whole image (H = 0): one forward of X * 0 per image
        # serves all of them (the same input; no channel is skipped, each keeps its score)
        low, high = activation.flatten(2).aminmax(dim=2)
        constant = (high <= low).flatten()
        first = torch.full((n,), n * c, device=index.device)
        first = first.scatter_reduce(0, image[constant], index[constant], "amin")
        run = index[~constant | (index == first[image])]
        scores = torch.empty(n * c, device=activation.device, dtype=activation.dtype)
        for part in self.chunks(len(run), x[0].numel() * x.element_size()):
            rows = run[part]
            up = F.interpolate(
                activation.flatten(0, 1)[rows, None].to(x.dtype),
                size=x.shape[2:],
                mode="bilinear",
                align_corners=self.align_corners,
            ).flatten(1)
            low_up, high_up = up.aminmax(dim=1, keepdim=True)
            masks = torch.where(high_up > low_up, (up - low_up) / (high_up - low_up), 0.0).view(
                -1, 1, *x.shape[2:]
            )
            inputs, target, extra = forwards.rows(image[rows])
            # channels-last runs a CPU convolutional network about 1.5x faster; same values
            masked = (inputs[0] * masks).contiguous(memory_format=torch.channels_last)
            edited = (
                "Score-CAM's masked inputs X * H^k, which lie between 0 and X",
                "0 must be in the range of inputs the model accepts (normalise the inputs so "
                "that it is, or choose a gradient method)",
            )
            found = scores_of(forwards, (masked, *inputs[1:]), target, extra, edited)
            scores[rows] = found.to(scores.dtype)
            self.report(part.stop, len(run))
        scores[constant] = scores[first[image[constant]]]
        return scores.view(n, c).softmax(dim=1)
