"""The three layers (core, metrics, application) and the method registry.

The import contracts themselves are checked by ``lint-imports`` in CI; these tests check what a
user sees at run time: what ``import captum_camplus`` loads, the metrics without Quantus, the
collision-free import path, and methods found by name everywhere once registered.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from captum_camplus import (
    METHODS,
    CamAttribution,
    LayerCams,
    LayerGradCam,
    register_method,
)
from captum_camplus.base import spatial_mean
from captum_camplus.registry import _CLASSES, _KEYS
from captum_camplus.utils import method_class, method_name

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, cwd: Path = ROOT, path: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env={"PYTHONPATH": str(path), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_importing_the_core_loads_no_metrics_and_no_application_dependency() -> None:
    # Captum itself imports matplotlib, PIL and tqdm (its visualization and progress modules), so
    # the check is: nothing beyond what `import captum` loads, and none of the heavy packages.
    result = _run(
        """
        import sys
        import captum
        before = set(sys.modules)
        import captum_camplus
        added = {name.partition(".")[0] for name in set(sys.modules) - before}
        print(sorted(added))
        heavy = ["metrics", "camplus_app", "quantus", "timm", "torchvision", "sklearn",
                 "skimage", "pandas", "transformers", "open_clip"]
        print(sorted(name for name in heavy if name in sys.modules))
        """
    )
    assert result.returncode == 0, result.stderr
    added, heavy = result.stdout.splitlines()
    assert added == "['captum_camplus']"
    assert heavy == "[]"


def test_metrics_work_without_quantus_and_name_the_extra_when_asked_for_a_quantus_metric() -> None:
    result = _run(
        """
        import sys
        sys.modules["quantus"] = None  # as if it were not installed
        import torch
        import metrics
        from metrics import evaluate_methods, functional
        y, o = torch.tensor([0.8, 0.5]), torch.tensor([0.4, 0.6])
        print(float(functional.average_drop(y, o)))
        try:
            metrics.AverageDrop
        except ImportError as error:
            print("ImportError:", error)
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert float(lines[0]) == pytest.approx(25.0)
    assert lines[1].startswith("ImportError:") and "captum-camplus[metrics]" in lines[1]


def test_a_users_own_metrics_module_does_not_hide_the_package(tmp_path: Path) -> None:
    (tmp_path / "metrics.py").write_text("OWN = True\n")
    result = _run(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import metrics
        assert metrics.OWN  # the user's module wins the top-level name, as Python decides
        import captum_camplus.metrics as ours
        from captum_camplus.metrics import AverageDrop, evaluate_methods
        from quantus.helpers.constants import AVAILABLE_METRICS
        print(ours is not metrics, AVAILABLE_METRICS["Faithfulness"]["Average Drop"] is AverageDrop)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]


def test_the_alias_is_the_same_module_when_nothing_shadows_it() -> None:
    import captum_camplus.metrics as alias
    import captum_camplus.metrics.functional as alias_functional
    import metrics
    import metrics.functional

    assert alias is metrics
    assert alias_functional is metrics.functional


def test_builtin_methods_are_registered_in_the_papers_order() -> None:
    assert list(METHODS)[:4] == ["Grad-CAM", "Grad-CAM+", "Grad-CAM++", "HiResCAM"]
    for spelling in ("Grad-CAM++", "gradcam++", "grad_cam_plus_plus", "LayerGradCamPlusPlus"):
        assert method_name(spelling) == "Grad-CAM++"
    assert method_class("hires cam") is METHODS["HiResCAM"]
    with pytest.raises(ValueError, match="unknown CAM method 'fancycam'.*Grad-CAM"):
        method_class("fancycam")
    with pytest.raises(TypeError, match="list of names, not one string"):
        LayerCams(nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1), methods="Grad-CAM")


@pytest.fixture
def registered_method():
    """A user's method, registered for one test and removed after it."""
    before = (dict(_CLASSES), dict(_KEYS))

    @register_method("Doubled Grad-CAM", "gradcam2")
    class LayerDoubledGradCam(CamAttribution):
        def weights(self, activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
            return 2 * spatial_mean(gradient)

    yield LayerDoubledGradCam
    _CLASSES.clear()
    _CLASSES.update(before[0])
    _KEYS.clear()
    _KEYS.update(before[1])


def test_a_registered_method_is_found_by_name_everywhere(registered_method) -> None:
    from metrics import cam_explain, evaluate_methods

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()
    layer = model[1]
    x = torch.rand(2, 3, 8, 8)

    assert METHODS["Doubled Grad-CAM"] is registered_method
    maps = LayerCams(model, layer, methods=["gradcam2", "Grad-CAM"]).attribute(x, target=1)
    assert list(maps) == ["Doubled Grad-CAM", "Grad-CAM"]
    torch.testing.assert_close(maps["Doubled Grad-CAM"], 2 * maps["Grad-CAM"])
    expected = LayerGradCam(model, layer).attribute(x, target=1)
    torch.testing.assert_close(maps["Grad-CAM"], expected)
    assert "Doubled Grad-CAM" in LayerCams(model, layer).methods  # the default is every method

    heatmap = cam_explain(model, x.numpy(), [1, 1], method="gradcam2", layer=layer)
    assert heatmap.shape == (2, 1, 8, 8)
    result = evaluate_methods(model, layer, x, methods=["Doubled Grad-CAM"], progress=False)
    assert result.methods == ["Doubled Grad-CAM"]


def test_a_name_taken_by_another_class_is_refused(registered_method) -> None:
    class LayerOtherCam(CamAttribution):
        def weights(self, activation, gradient):
            return gradient

    with pytest.raises(ValueError, match="name 'Grad-CAM' is taken by .*LayerGradCam"):
        register_method("Grad-CAM")(LayerOtherCam)
    with pytest.raises(ValueError, match="'hirescam' already names 'HiResCAM'"):
        register_method("Other CAM", "HiRes-CAM")(LayerOtherCam)
    assert "Other CAM" not in METHODS

    with pytest.raises(TypeError, match="CamAttribution subclasses"):
        register_method("not a method")(dict)


def test_the_metrics_use_only_the_cores_public_names() -> None:
    """The metrics import from the package root the names it exports, and the helpers for
    layers built on the core from ``captum_camplus.utils``: nothing else, no private module."""
    import ast

    import captum_camplus
    import captum_camplus.utils

    allowed = {
        "captum_camplus": set(captum_camplus.__all__),
        "captum_camplus.utils": set(captum_camplus.utils.__all__),
    }
    for path in sorted((ROOT / "metrics").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "captum_camplus"
            ):
                assert node.module in allowed, f"{path.name}: from {node.module} import"
                for alias in node.names:
                    assert alias.name in allowed[node.module], f"{path.name}: {alias.name}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("captum_camplus") for a in node.names), path.name


def test_the_public_names_are_what_a_user_needs_and_utils_only_re_exports() -> None:
    """The root exports the attribution classes and their companions, not the helpers the
    metrics use; ``captum_camplus.utils`` re-exports those from where they live."""
    import captum_camplus
    import captum_camplus.utils as utils

    helpers = set(utils.__all__)
    assert not helpers & set(captum_camplus.__all__)
    assert not [name for name in helpers if hasattr(captum_camplus, name)]
    assert all(hasattr(captum_camplus, name) for name in captum_camplus.__all__)
    for name in helpers:
        value = getattr(utils, name)
        home = getattr(value, "__module__", None)
        assert home is None or home != utils.__name__, name  # defined elsewhere, not here
