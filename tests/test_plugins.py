"""Methods from other installed packages (entry-point group ``captum_camplus.methods``), and a
method added without touching the rest: each reaches every layer, and the suite still passes.

The plugins are real distributions: a package and its ``NAME-0.1.dist-info`` (METADATA,
entry_points.txt) in a folder on ``sys.path``, as ``pip install`` leaves them, imported in a
fresh interpreter so that the registry loads them as a user's would.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: A user's method in a package of its own: XGrad-CAM (Fu et al. 2020, arXiv:2008.02312) as
#: Taimeskhanov et al. (2024, arXiv:2404.01964) define it, definition 4 (a spatial mean and an L1
#: norm: the built-in XGrad-CAM follows Fu et al.), under a name of its own.
XGRAD_CAM = '''
import torch
from captum_camplus import CamAttribution, register_method, spatial_mean, spatial_sum


@register_method("GAP-XGrad-CAM")
class LayerGapXGradCam(CamAttribution):
    """w_k = GAP(A^k / ||A^k||_1 (.) g^k); a channel of zeros gets weight 0."""

    def weights(self, activation, gradient):
        norm = spatial_sum(activation.abs())
        safe = torch.where(norm > 0, norm, torch.ones_like(norm))
        return spatial_mean(activation / safe * gradient)
'''

BROKEN = """
from captum_camplus import CamAttribution


class NotAMethod:
    pass


class Undecorated(CamAttribution):
    def weights(self, activation, gradient):
        return gradient
"""

#: name -> (entry-point value, words of the warning that skips it)
BROKEN_ENTRIES = {
    "missing": ("camplus_broken.missing:Nothing", "ModuleNotFoundError"),
    "not_a_method": ("camplus_broken:NotAMethod", "not a CamAttribution subclass"),
    "no_class": ("camplus_broken:Absent", "AttributeError"),
    "undecorated": ("camplus_broken:Undecorated", "not registered on import"),
    "fails": ("camplus_failing:Anything", "RuntimeError: broken on import"),
}


def install_distribution(site: Path, name: str, modules: dict[str, str], entries: dict) -> None:
    """A distribution ``name`` 0.1 with ``modules`` (name -> source) and entry points, in
    ``site``, laid out as pip installs it."""
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = [f"{key} = {value}" for key, value in entries.items()]
    (info / "entry_points.txt").write_text("[captum_camplus.methods]\n" + "\n".join(lines) + "\n")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder holding the GAP-XGrad-CAM plugin, as a separately installed package."""
    folder = tmp_path / "site"
    folder.mkdir()
    install_distribution(
        folder,
        "camplus_xgrad",
        {"camplus_xgrad": XGRAD_CAM},
        {"gapxgradcam": "camplus_xgrad:LayerGapXGradCam"},
    )
    return folder


def _python(code: str, site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT), str(ROOT / "tests")])}
    return subprocess.run(
        [sys.executable, *args, "-c", textwrap.dedent(code)] if code else [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,  # a hang fails; the ten files of the readers' test take 5-25 min on 2 cores
    )


def test_a_plugin_method_reaches_every_layer(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _python(
        f"""
        import warnings
        warnings.simplefilter("error")  # a good plugin loads without a word
        import numpy as np
        import quantus
        import torch
        from metrics_models import tiny_setup
        from captum_camplus import DEFAULT_METHODS, METHODS, LayerCams
        from captum_camplus.utils import method_class
        from metrics import AverageDrop, WinPercentage, cam_explain, evaluate_methods
        from camplus_app import cli, figures

        four = ["Grad-CAM", "Grad-CAM+", "Grad-CAM++", "HiResCAM"]
        assert list(DEFAULT_METHODS) == [*four, "GAP-XGrad-CAM"]
        assert list(METHODS)[-1] == "GAP-XGrad-CAM"
        assert method_class("gapxgradcam").__module__ == "camplus_xgrad"
        model, images, labels = tiny_setup(n=3)
        maps = LayerCams(model, model.layer).attribute(images, target=labels)
        assert "GAP-XGrad-CAM" in maps and torch.isfinite(maps["GAP-XGrad-CAM"]).all()

        result = evaluate_methods(
            model, model.layer, images, methods=["gapxgradcam"], progress=False
        )
        assert result.methods == ["GAP-XGrad-CAM"]
        table = quantus.evaluate(
            metrics={{"AD": AverageDrop(), "Win %": WinPercentage(["GAP-XGrad-CAM", "Grad-CAM"])}},
            xai_methods={{"GAP-XGrad-CAM": cam_explain}},
            model=model, x_batch=images.numpy(), y_batch=labels.numpy(),
            explain_func_kwargs={{"layer": model.layer}}, agg_func=np.mean, verbose=False,
        )
        assert np.isfinite(table["GAP-XGrad-CAM"]["AD"])

        drawn = {{}}
        real = figures.overlay_figure
        def spy(image, heatmaps, title):
            drawn.update(heatmaps)
            return real(image, heatmaps, title)
        figures.overlay_figure = spy
        argv = ["explain", "coffee", "--methods", "gapxgradcam,gradcam", "-q", "-o", {str(out)!r}]
        assert cli.main(argv) == 0
        assert list(drawn) == ["GAP-XGrad-CAM", "Grad-CAM"], list(drawn)
        print("ok")
        """,
        site,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok"]


def test_a_plugin_name_is_accepted_by_the_command_line(site: Path) -> None:
    result = _python("", site, "-m", "camplus_app", "explain", "--help")
    assert result.returncode == 0, result.stderr
    assert "GAP-XGrad-CAM" in result.stdout  # the default list of --methods


def test_broken_plugins_are_named_and_skipped(site: Path) -> None:
    install_distribution(
        site,
        "camplus_broken",
        {"camplus_broken": BROKEN, "camplus_failing": "raise RuntimeError('broken on import')"},
        {name: value for name, (value, _) in BROKEN_ENTRIES.items()},
    )
    result = _python(
        """
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from captum_camplus import METHODS, LayerCams
            names = list(METHODS)
            again = list(METHODS)  # loaded once: no second round of warnings
        print(names)
        for warning in caught:
            print(warning.category.__name__, "|", warning.message)
        """,
        site,
    )
    assert result.returncode == 0, result.stderr
    first, *warnings = result.stdout.splitlines()
    assert "GAP-XGrad-CAM" in first and "Undecorated" not in first
    assert len(warnings) == len(BROKEN_ENTRIES), warnings
    for name, (value, words) in BROKEN_ENTRIES.items():
        (line,) = [w for w in warnings if f"plugin {name!r} ({value})" in w]
        assert line.startswith("RuntimeWarning |") and words in line, line


@pytest.mark.slow
def test_the_registry_readers_pass_with_a_method_they_do_not_know(site: Path) -> None:
    """A new method (here GAP-XGrad-CAM from a plugin, registered after the built-ins exactly as a
    new built-in module would be) changes nothing for the tests of the registry's readers: the
    reference, the benchmark, the walls, the command line and the metrics skip what they have
    no formula for."""
    files = [
        "tests/core/test_multi.py",
        "tests/core/test_formulas.py",
        "tests/core/test_differentiable.py",
        "tests/test_architecture.py",
        "tests/metrics/test_metrics_evaluate.py",
        "tests/metrics/test_metrics_quantus.py",
        "tests/app/test_cli.py",
        "tests/app/test_cli_compare.py",
        "tests/app/test_walls.py",
        "tests/benchmarks/test_benchmarks.py",
    ]
    check = _python("from captum_camplus import METHODS; assert 'GAP-XGrad-CAM' in METHODS", site)
    assert check.returncode == 0, check.stderr
    result = _python("", site, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *files)
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.fixture
def throwaway():
    """A built-in-style method (a class and its decorator, nothing else), unregistered after."""
    from captum_camplus import CamAttribution, register_method, spatial_mean, unregister_method

    @register_method("Throwaway-CAM")
    class LayerThrowawayCam(CamAttribution):
        def weights(self, activation, gradient):
            return spatial_mean(gradient.abs())

    yield LayerThrowawayCam
    unregister_method("Throwaway-CAM")


def test_the_registry_readers_take_or_skip_a_method_they_do_not_know(throwaway) -> None:
    """In-process and quick: each reader of the registry sees the new method, and the ones with
    formulas (the float64 reference, the benchmark's accuracy) skip it."""
    import torch
    from metrics_models import tiny_setup

    import captum_camplus.testing.reference as reference
    from benchmarks import run as bench
    from camplus_app.walls.cams import wall_maps
    from captum_camplus import DEFAULT_METHODS, METHODS, LayerCams
    from metrics import evaluate_methods

    assert list(METHODS)[-1] == "Throwaway-CAM" and "Throwaway-CAM" not in reference.FORMULAS
    assert list(DEFAULT_METHODS)[-1] == "Throwaway-CAM"  # registered with default=True
    model, images, labels = tiny_setup(n=3)
    maps = LayerCams(model, model.layer).attribute(images, target=labels, relu_attributions=True)
    assert list(maps) == list(DEFAULT_METHODS)
    result = evaluate_methods(model, model.layer, images, maps_from=["pre-softmax"], progress=False)
    assert result.methods == list(DEFAULT_METHODS)
    a, g = reference.capture_layer(model, model.layer, images, labels)
    references = bench.reference_maps(a, g)
    raw, _ = bench.deviations({name: m[:, 0] for name, m in maps.items()}, references)
    assert raw < 1e-4  # the four with formulas; the new one skipped, not a KeyError
    alone = bench.deviations({"Throwaway-CAM": maps["Throwaway-CAM"]}, references)
    assert all(math.isnan(value) for value in alone)  # nothing to compare with
    walls = wall_maps(model, model.layer, images, labels)  # the walls use an import-time list
    assert {"Grad-CAM", "HiResCAM"} <= set(walls)
    torch.testing.assert_close(walls["Grad-CAM"], maps["Grad-CAM"])


def test_a_second_thread_waits_for_the_plugins_while_the_first_loads_them(monkeypatch) -> None:
    """The first read loads the plugins; a read from another thread meanwhile sees the whole
    registry, never the built-in methods alone (a slow plugin import widens the window)."""
    import threading
    import time

    from captum_camplus import (
        CamAttribution,
        register_method,
        registry,
        spatial_mean,
        unregister_method,
    )

    class SlowEntry:
        name, value = "slow", "camplus_slow:LayerSlowCam"

        def load(self) -> type:
            time.sleep(0.3)  # a plugin import that takes time

            @register_method("Slow-CAM")
            class LayerSlowCam(CamAttribution):
                def weights(self, activation, gradient):
                    return spatial_mean(gradient)

            return LayerSlowCam

    monkeypatch.setattr(registry, "entry_points", lambda group: [SlowEntry()])
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry, "_plugins_loading", False, raising=False)
    seen: dict[str, list[str]] = {}

    def read(name: str) -> None:
        seen[name] = list(registry.METHODS)

    first = threading.Thread(target=read, args=("first",))
    second = threading.Thread(target=read, args=("second",))
    try:
        first.start()
        time.sleep(0.1)  # the first thread is inside the slow import now
        second.start()
        first.join(timeout=10)
        second.join(timeout=10)
        assert seen["first"][-1] == seen["second"][-1] == "Slow-CAM"
    finally:
        if "Slow-CAM" in registry._CLASSES:
            unregister_method("Slow-CAM")
