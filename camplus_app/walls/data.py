"""STACK-MIX-digits: the STACK-MIX of Taimeskhanov et al. (eq. 6) from scikit-learn's digits.

Each image is two 8x8 digits of the same class, one above the other: the top one where the
masked model can see, the bottom one in its dead zone. The digits ship inside scikit-learn, so
nothing is downloaded.

References:
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD,
  arXiv:2404.01964.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

#: Fraction of the 1797 digits held out for the test split, and the seed of that split.
TEST_FRACTION = 0.3
SPLIT_SEED = 0


@dataclass(frozen=True)
class StackedDigits:
    """A STACK-MIX-digits split.

    Attributes:
        images: ``(N, 1, 16, 8)`` float32 in [0, 1]: rows 0-7 the top digit, rows 8-15 the bottom.
        labels: ``(N,)`` class of both digits.
        top, bottom: ``(N,)`` indices of the two digits in ``sklearn.datasets.load_digits()``.
    """

    images: Tensor
    labels: Tensor
    top: Tensor
    bottom: Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]


def load_digits_tensors() -> tuple[Tensor, Tensor]:
    """scikit-learn's 1797 digits as ``(1797, 1, 8, 8)`` float32 in [0, 1] and their labels."""
    images, labels = _digits()
    return images.clone(), labels.clone()


@functools.cache
def _digits() -> tuple[Tensor, Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # an optional dependency: say which extra provides it
        raise ImportError(
            "STACK-MIX-digits needs scikit-learn: pip install 'captum-camplus[walls]'"
        ) from error
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.as_tensor(digits.target, dtype=torch.long)


def stack_mix_digits(split: Literal["train", "test"] = "test", seed: int = 0) -> StackedDigits:
    """Stack every digit of a split on another digit of its class (Taimeskhanov et al., eq. 6).

    The split of the digits is fixed (:data:`TEST_FRACTION`, :data:`SPLIT_SEED`); ``seed`` only
    draws the partners, so a new seed gives a new pairing of the same digits (the training loop
    uses one per epoch). Partners are a random cycle within each class: every digit appears once
    on top and once at the bottom, never with itself.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = _digits()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = round(TEST_FRACTION * len(labels))
    members = order[:n_test] if split == "test" else order[n_test:]
    members = members.sort().values
    generator = torch.Generator().manual_seed(seed)
    partner = torch.empty_like(members)
    for cls in labels[members].unique():
        positions = (labels[members] == cls).nonzero().squeeze(1)
        cycle = positions[torch.randperm(len(positions), generator=generator)]
        partner[cycle] = members[cycle.roll(-1)]
    return StackedDigits(
        images=torch.cat([images[members], images[partner]], dim=2),
        labels=labels[members],
        top=members,
        bottom=partner,
    )


def theorem3_images(size: tuple[int, int] = (18, 18)) -> Tensor:
    """The first digit of each class upsampled (bilinear) to ``size``: ``(10, 1, *size)``, [0, 1].

    Taimeskhanov et al., figure 3 illustrates theorem 3 on an MNIST digit; these are their
    scikit-learn cousins.
    """
    images, labels = _digits()
    first = torch.stack([(labels == c).nonzero()[0, 0] for c in range(10)])
    upsampled = torch.nn.functional.interpolate(
        images[first], size=size, mode="bilinear", align_corners=False
    )
    return upsampled.clamp(0.0, 1.0)
