"""The method registry refuses what is not a method, keys every word of a name, and unregisters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_camplus import (
    METHODS,
    CamAttribution,
    LayerCams,
    register_method,
    unregister_method,
)
from captum_camplus.utils import method_class, method_name


class LayerPatchCam(CamAttribution):
    """A made-up method for the registry tests: W = ReLU(g)."""

    def weights(self, activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        return gradient.clamp(min=0)


class LayerPlainCam(CamAttribution):
    def weights(self, activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(gradient)


@pytest.fixture
def cleanup():
    """Names registered by a test are unregistered after it, whatever happens."""
    before = list(METHODS)
    yield
    for name in [name for name in METHODS if name not in before]:
        unregister_method(name)
    assert list(METHODS) == before


def test_the_abstract_base_and_non_methods_are_refused(cleanup) -> None:
    with pytest.raises(TypeError, match=r"CamAttribution as .Base.: it is abstract \(no weights\)"):
        register_method("Base")(CamAttribution)

    class StillAbstract(CamAttribution):
        pass

    with pytest.raises(TypeError, match="StillAbstract as .Nothing.: it is abstract"):
        register_method("Nothing")(StillAbstract)
    for thing in (dict, nn.Conv2d, LayerPatchCam(nn.Identity(), nn.Identity()), len):
        with pytest.raises(TypeError, match="decorates CamAttribution subclasses"):
            register_method("Thing")(thing)
    for bad in ("", " - _ ", None):
        with pytest.raises(TypeError, match="non-empty string"):
            register_method(bad)
    with pytest.raises(TypeError, match="alias must be a non-empty string"):
        register_method("Fine", "")
    assert list(METHODS)[:4] == ["Grad-CAM", "Grad-CAM+", "Grad-CAM++", "HiResCAM"]
    LayerCams(nn.Identity(), nn.Identity())  # the registry still builds every method


def test_no_word_of_a_name_is_dropped(cleanup) -> None:
    register_method("PatchCAM")(LayerPatchCam)
    register_method("CAM")(LayerPlainCam)  # was refused: "LayerCAM" was keyed "cam"
    assert (
        method_class("patch-cam") is LayerPatchCam
        and method_class("LayerPatchCam") is LayerPatchCam
    )
    assert method_class("CAM") is LayerPlainCam and method_class("LayerPlainCam") is LayerPlainCam
    assert method_name("grad cam plus plus") == "Grad-CAM++"  # "plus" is still "+"
    with pytest.raises(ValueError, match="unknown CAM method 'plain cam'"):
        method_name("plain cam")


def test_unregister_removes_the_method_and_every_alias(cleanup) -> None:
    register_method("PatchCAM", "lcam")(LayerPatchCam)
    assert unregister_method("lcam") is LayerPatchCam
    assert "PatchCAM" not in METHODS
    for name in ("PatchCAM", "lcam", "LayerPatchCam"):
        with pytest.raises(ValueError, match="unknown CAM method"):
            method_name(name)
    with pytest.raises(ValueError, match="unknown CAM method 'PatchCAM'"):
        unregister_method("PatchCAM")
    register_method("Patch CAM")(LayerPatchCam)  # free again, under another display name
    assert method_name("patchcam") == "Patch CAM"


def test_re_registering_a_class_replaces_its_aliases(cleanup) -> None:
    register_method("PatchCAM", "old-alias")(LayerPatchCam)
    register_method("PatchCAM", "new-alias")(LayerPatchCam)  # a re-run notebook cell, edited
    assert method_name("new alias") == "PatchCAM"
    with pytest.raises(ValueError, match="unknown CAM method"):
        method_name("old alias")


def test_the_registry_view_is_read_only() -> None:
    with pytest.raises(TypeError):
        METHODS["Mine"] = LayerPatchCam  # type: ignore[index]
    assert "Grad-CAM" in repr(METHODS) and len(METHODS) >= 4
