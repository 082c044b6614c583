"""Small masked CNNs: the theorem-3 model and a miniature masked VGG of Taimeskhanov et al.

References:
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD,
  arXiv:2404.01964.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from captum_camplus.masking import ViewMask, bottom_rows, mask_linear_input, unseen_region


class WalledCNN(nn.Module):
    """``head(features(x))`` where the head starts with flatten plus a masked linear layer.

    The last ``unseen_rows`` rows of the feature map are walled off (:func:`mask_linear_input`).
    The CAMs explain ``features[cam_index]``.

    Args:
        features: Convolution / pooling / activation chain from the image to the flattened map.
        head: ``nn.Sequential(nn.Flatten(), nn.Linear(...), ...)``.
        image_size: ``(H, W)`` of the input images.
        in_channels: Channels of the input images.
        unseen_rows: Rows at the bottom of the feature map the head cannot see.
        cam_index: Index in ``features`` of the layer the CAMs explain (default: the last).
    """

    def __init__(
        self,
        features: nn.Sequential,
        head: nn.Sequential,
        image_size: Sequence[int],
        in_channels: int,
        unseen_rows: int,
        cam_index: int = -1,
    ) -> None:
        super().__init__()
        if not (
            len(head) >= 2 and isinstance(head[0], nn.Flatten) and isinstance(head[1], nn.Linear)
        ):
            raise ValueError("the head must start with nn.Flatten() followed by nn.Linear")
        linear: nn.Linear = head[1]
        self.features = features
        self.head = head
        self.image_size = tuple(int(s) for s in image_size)
        self.in_channels = in_channels
        self.cam_index = cam_index % len(features)
        feature_shape = self._shape_after(features)
        unseen = bottom_rows(feature_shape[1], feature_shape[2], unseen_rows)
        self.view_mask: ViewMask = mask_linear_input(linear, feature_shape, unseen)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    @property
    def cam_layer(self) -> nn.Module:
        """The layer whose output the CAMs explain."""
        return self.features[self.cam_index]

    def cam_unseen(self) -> Tensor:
        """Boolean map of the CAM layer's positions the head cannot see, ``(h, w)``."""
        cam_shape = self._shape_after(self.features[: self.cam_index + 1])
        after = self.features[self.cam_index + 1 :]
        return unseen_region(after, cam_shape[1:], self.view_mask.unseen)

    def dead_zone(self) -> Tensor:
        """Boolean ``(H, W)`` map of the input pixels the model cannot see (section 3.1)."""
        return unseen_region(self.features, self.image_size, self.view_mask.unseen)

    def _shape_after(self, layers: nn.Module) -> tuple[int, ...]:
        device = next(self.features.parameters()).device
        with torch.no_grad():
            probe = torch.zeros(1, self.in_channels, *self.image_size, device=device)
            return tuple(layers(probe).shape[1:])


class Theorem3CNN(WalledCNN):
    """Figure 2 of Taimeskhanov et al. with ``L = 1``: conv, ReLU, max-pool, one linear unit.

    Filters and linear weights are i.i.d. ``N(0, tau^2)`` and the weights reading the lower half of
    the pooled map are zero: the setting of Taimeskhanov et al., theorem 3. The CAMs explain the
    ReLU output ``B`` (before pooling), as in Taimeskhanov et al., definition 1.

    Args:
        image_size: ``(H, W)``; ``H - k + 1`` and ``W - k + 1`` must be multiples of ``pool`` and
            the pooled height even.
        filters: ``V``, the number of filters (theorem 3 needs ``V > 20``).
        kernel_size: ``k``.
        pool: ``k'``, the max-pooling size.
        tau: Standard deviation of the weights.
        generator: Random generator for the weights.
    """

    def __init__(
        self,
        image_size: Sequence[int] = (18, 18),
        filters: int = 64,
        kernel_size: int = 3,
        pool: int = 2,
        tau: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        height, width = (int(s) - kernel_size + 1 for s in image_size)
        if height <= 0 or width <= 0 or height % pool or width % pool or (height // pool) % 2:
            raise ValueError(
                f"image_size {tuple(image_size)} gives a {height}x{width} map: it must be "
                f"divisible by the pool size {pool} with an even pooled height "
                "(Taimeskhanov et al., theorem 3)"
            )
        conv = nn.Conv2d(1, filters, kernel_size, bias=False)
        linear = nn.Linear(filters * (height // pool) * (width // pool), 1, bias=False)
        for layer in (conv, linear):
            nn.init.normal_(layer.weight, std=tau, generator=generator)
        features = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(pool))
        head = nn.Sequential(nn.Flatten(), linear)
        super().__init__(features, head, image_size, 1, height // pool // 2, cam_index=1)


class WallCNN(WalledCNN):
    """A small VGG-like CNN whose head cannot see the bottom of the image (figure 4 in small).

    ``conv-ReLU-conv-ReLU-maxpool-conv-ReLU``, then flatten, a masked linear layer, ReLU and the
    classifier. Like Taimeskhanov et al.'s model there is no pooling after the last convolution,
    whose ReLU output the CAMs explain. With the defaults (16x8 images, 6 of 8 rows walled off) the
    dead zone is exactly the bottom 8 rows of the image: :meth:`dead_zone` computes it.

    Args:
        num_classes: Number of classes.
        image_size: ``(H, W)``, both even.
        in_channels: Channels of the input images.
        width: Filters of the first two convolutions (the last has twice as many).
        hidden: Units of the masked dense layer.
        unseen_rows: Rows at the bottom of the last feature map the head cannot see.
    """

    def __init__(
        self,
        num_classes: int = 10,
        image_size: Sequence[int] = (16, 8),
        in_channels: int = 1,
        width: int = 16,
        hidden: int = 64,
        unseen_rows: int = 6,
    ) -> None:
        height, width_px = (int(s) for s in image_size)
        if height % 2 or width_px % 2:
            raise ValueError(f"image_size must be even, got {tuple(image_size)}")
        features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
        )
        head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * (height // 2) * (width_px // 2), hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        super().__init__(features, head, image_size, in_channels, unseen_rows)
