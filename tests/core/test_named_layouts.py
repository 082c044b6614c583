"""A layout named by the caller is checked against the shapes of the tensor and its input: where
other readings fit and the named one does not, the error lists those that fit (never a map on
the wrong axes). Plain torch models; the model families are in ``test_layout_families.py``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_camplus import LayerCams, LayerGradCam, TokenLayout

TARGET = [0, 1]


class Permuted(nn.Module):
    """A conv whose output is moved to channels last ``(N, h, w, C)`` before the head."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, stride=stride, padding=1)
        self.last = nn.Identity()  # the layer: (N, h, w, C)
        self.head = nn.LazyLinear(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.last(self.conv(x).permute(0, 2, 3, 1)).flatten(1))


class Tokens(nn.Module):
    """One class token, then the patch grid of a ``patch`` x ``patch`` embedding."""

    def __init__(self, patch: int, width: int = 6) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, width, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, width))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), patches], dim=1)
        return self.head(self.norm(tokens).mean(dim=1))


def _cnn() -> nn.Sequential:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, stride=8, padding=1)  # 32 x 64 -> (N, 8, 4, 8)
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 8, 3)).eval()


def test_channels_last_on_a_channels_first_conv_is_refused_naming_the_reading_that_fits():
    model = _cnn()
    x = torch.randn(2, 3, 32, 64)
    for method in (LayerGradCam, LayerCams):
        with pytest.raises(
            ValueError, match=r"\(2, 8, 4, 8\) of the 32 x 64 input does not"
        ) as info:
            method(model, model[1], layout="channels_last").attribute(x, target=TARGET)
        text = str(info.value)
        assert "read as layout='channels_last'" in text
        assert "channels first (N, C=8, 4 x 8 grid): layout='channels_first'" in text
    expected = LayerGradCam(model, model[1]).attribute(x, target=TARGET)
    assert expected.shape == (2, 1, 4, 8)
    for layout in ("channels_first", "auto"):
        named = LayerGradCam(model, model[1], layout=layout).attribute(x, target=TARGET)
        torch.testing.assert_close(named, expected)


def test_channels_last_that_fits_is_taken_also_where_channels_first_fits_too():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 64)
    only_last = Permuted(channels=24, stride=8).eval()  # (2, 4, 8, 24): only channels last fits
    only_last(x)  # the lazy head
    cam = LayerGradCam(only_last, only_last.last, layout="channels_last")
    assert cam.attribute(x, target=TARGET).shape == (2, 1, 4, 8)
    both = Permuted(channels=16, stride=8).eval()  # (2, 4, 8, 16): 8 x 16 also follows 32 x 64
    both(x)
    cam = LayerGradCam(both, both.last, layout="channels_last")
    assert cam.attribute(x, target=TARGET).shape == (2, 1, 4, 8)


def test_a_token_grid_that_contradicts_the_input_is_refused_naming_the_grid_that_fits():
    torch.manual_seed(0)
    model = Tokens(patch=16).eval()
    x = torch.randn(2, 3, 256, 64)  # 1 + 16 x 4 = 65 tokens, also 1 + 8 x 8
    with pytest.raises(ValueError, match=r"\(2, 65, 6\) of the 256 x 64 input does not") as info:
        LayerGradCam(model, model.norm, layout=TokenLayout(1, (8, 8))).attribute(x, TARGET)
    text = str(info.value)
    assert "read as layout=TokenLayout(prefix_tokens=1, grid=(8, 8))" in text
    assert "layout=TokenLayout(prefix_tokens=1, grid=(16, 4))" in text
    named = LayerGradCam(model, model.norm, layout=TokenLayout(1, (16, 4))).attribute(x, TARGET)
    from_input = LayerGradCam(model, model.norm, layout=TokenLayout(1)).attribute(x, TARGET)
    assert named.shape == (2, 1, 16, 4)
    torch.testing.assert_close(named, from_input)


def test_a_named_layout_stands_where_the_shapes_have_no_reading():
    """A conv without padding at an odd aspect has no reading: the caller's choice is taken."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    model = nn.Sequential(nn.Conv2d(3, 5, (14, 10)), nn.Flatten(), nn.Linear(5 * 3 * 7, 3)).eval()
    maps = LayerGradCam(model, model[0], layout="channels_last").attribute(x, TARGET)
    assert maps.shape == (2, 1, 5, 3)  # (N, 5, 3, 7) read as a 5 x 3 grid of 7 channels
