"""Hostile use of the core's public API (round three): layout callables that return the wrong
thing, layout options of the wrong kind, method names looked up in odd spellings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_camplus import (
    METHODS,
    LayerCams,
    LayerGradCam,
    TokenLayout,
    upsample_and_normalize,
)
from captum_camplus.utils import method_name


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean((2, 3)))


NET = _Net().eval()
X = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _cam(layout):
    return LayerGradCam(NET, NET.conv, layout=layout).attribute(X, target=0)


@pytest.mark.parametrize(
    ("layout", "match"),
    [
        (lambda t: 3, "into int; it must return"),
        (lambda t: t.long(), "into a torch.int64 tensor"),
        (lambda t: torch.empty(t.shape, device="meta"), "on meta; it must return"),
        (lambda t: t[:1], r"into \(1, 4, 8, 8\)"),
        (lambda t: t.mean((2, 3)), r"into \(2, 4\)"),
    ],
)
def test_a_layout_callable_returning_the_wrong_thing_is_named(layout, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _cam(layout)


def test_a_layout_callable_may_permute_or_change_precision() -> None:
    assert _cam(lambda t: t.transpose(2, 3)).shape == (2, 1, 8, 8)
    assert _cam(lambda t: t.double()).shape == (2, 1, 8, 8)


@pytest.mark.parametrize(
    ("layout", "error", "match"),
    [
        ("nchw", ValueError, "unknown layout 'nchw'; choose from"),
        (3, TypeError, "layout must be None, a name"),
        ("tokens", ValueError, "pass TokenLayout"),
    ],
)
def test_layout_options_of_the_wrong_kind_list_the_choices(layout, error, match: str) -> None:
    with pytest.raises(error, match=match):
        _cam(layout)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prefix_tokens": -1}, "prefix_tokens must be an int >= 0"),
        ({"prefix_tokens": 0, "grid": (0, 4)}, "grid must be positive sizes"),
    ],
)
def test_token_layouts_of_impossible_shapes_are_refused(kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TokenLayout(**kwargs)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("grad cam", "Grad-CAM"),
        ("GRADCAM++", "Grad-CAM++"),
        ("LayerGradCam", "Grad-CAM"),
        ("grad_cam_plus_plus", "Grad-CAM++"),
        ("hirescam", "HiResCAM"),
    ],
)
def test_method_names_match_leniently(name: str, expected: str) -> None:
    assert method_name(name) == expected


@pytest.mark.parametrize(
    ("name", "error", "match"),
    [
        ("", ValueError, "unknown CAM method ''; choose from Grad-CAM"),
        ("Grad-CAM\x00", ValueError, "unknown CAM method"),
        (None, TypeError, "a method name is a string, got NoneType"),
        (["Grad-CAM"], TypeError, "a method name is a string, got list"),
    ],
)
def test_odd_method_names_are_refused_with_the_choices(name, error, match: str) -> None:
    with pytest.raises(error, match=match):
        method_name(name)


def test_the_registry_cannot_be_written_through_its_view() -> None:
    with pytest.raises(TypeError):
        METHODS["mine"] = LayerGradCam  # type: ignore[index]
    assert "mine" not in METHODS


def test_one_method_named_twice_is_computed_once() -> None:
    maps = LayerCams(NET, NET.conv, methods=["gradcam", "Grad-CAM"]).attribute(X, target=0)
    assert list(maps) == ["Grad-CAM"]


def test_upsampling_to_an_empty_size_is_refused() -> None:
    with pytest.raises(ValueError, match=r"size must be positive sizes .* got \(0, 8\)"):
        upsample_and_normalize(torch.rand(2, 1, 4, 4), (0, 8))
