"""``python -m camplus_app`` (also what ``torchrun -m camplus_app`` runs) never imports a user's
``metrics.py`` from the working directory, which ``-m`` puts first on ``sys.path``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

USERS_METRICS = 'raise RuntimeError("the user\'s metrics.py was imported")\n'


@pytest.fixture
def users_folder(tmp_path: Path) -> Path:
    (tmp_path / "metrics.py").write_text(USERS_METRICS)
    return tmp_path


def _camplus(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", "PYTHONPATH")}
    return subprocess.run(
        [sys.executable, "-m", "camplus_app", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("args", [["--help"], ["compare", "--help"]])
def test_help_ignores_a_metrics_module_in_the_working_directory(users_folder, args) -> None:
    result = _camplus(users_folder, *args)
    assert result.returncode == 0, result.stderr
    assert "usage: camplus" in result.stdout and "metrics.py" not in result.stderr


def test_a_command_loads_our_metrics_not_the_users(users_folder) -> None:
    # explain imports the model zoo, hence the metrics, before it looks for the image
    result = _camplus(users_folder, "explain", "missing.jpg", "-o", str(users_folder / "out"))
    assert result.returncode == 2, result.stderr
    assert result.stderr == "camplus: error: image not found: missing.jpg\n"
