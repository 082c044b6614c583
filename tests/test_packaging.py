"""The distribution as a user installs it: one version everywhere, a wheel that carries the
license and the PEP 561 markers, and project files that agree with each other."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import captum_camplus

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("captum_camplus", "metrics", "camplus_app")


def test_one_version_everywhere() -> None:
    """pyproject reads the version from ``captum_camplus.__version__``; the installed metadata
    and ``camplus --version`` say the same."""
    from camplus_app.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(["--version"])
    assert out.getvalue().split() == ["camplus", captum_camplus.__version__]
    assert importlib.metadata.version("captum-camplus") == captum_camplus.__version__
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \["version"\]', pyproject, re.M)
    assert 'version = { attr = "captum_camplus.__version__" }' in pyproject
    assert not re.search(r'^version = "', pyproject, re.M)  # written once, in the package


def test_the_changelog_has_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert re.search(
        rf"^## \[{re.escape(captum_camplus.__version__)}\] - \d{{4}}-\d\d-\d\d$", changelog, re.M
    )


def test_every_package_is_marked_typed() -> None:
    for package in PACKAGES:
        assert (ROOT / package / "py.typed").is_file(), package


def test_python_versions_agree() -> None:
    """``requires-python``, ruff's target and the README's quick start name one oldest Python."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    oldest = re.search(r'^requires-python = ">=3\.(\d+)"', pyproject, re.M)
    assert oldest is not None
    minor = oldest[1]
    assert f'target-version = "py3{minor}"' in pyproject
    assert f"Python 3.{minor} or newer" in " ".join((ROOT / "README.md").read_text().split())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built offline with the installed setuptools from a copy of the sources (so
    the build leaves nothing in the working tree)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*command, "--quiet", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    (built,) = out.glob("captum_camplus-*.whl")
    return built


def test_the_wheel_carries_license_markers_and_version(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
        dist_info = metadata_name.rsplit("/", 1)[0]
        license_text = archive.read(f"{dist_info}/licenses/LICENSE").decode()
    for package in PACKAGES:
        assert f"{package}/py.typed" in names, package
    assert license_text == (ROOT / "LICENSE").read_text()
    assert metadata["Version"] == captum_camplus.__version__
    assert metadata["License-Expression"] == "BSD-3-Clause"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert wheel.name.startswith(f"captum_camplus-{captum_camplus.__version__}-")
