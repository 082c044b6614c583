"""The README runs as written: every Python block, as a file of its own in a fresh process
(offline: random-init or bundled models), and every number it prints is what the scripts
compute now (:mod:`benchmarks.readme_numbers`), within its noise."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: Blocks that take minutes on a shared CPU (Quantus scores four methods with five metrics).
SLOW_SECTIONS = {"Metrics with Quantus"}


def python_blocks() -> list[tuple[str, str]]:
    """(section heading, code) of every ```python block of the README, in order."""
    blocks, heading, code = [], "", None
    for line in README.read_text().splitlines():
        if code is None and line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif code is None and line.strip() == "```python":
            code = []
        elif code is not None and line.strip() == "```":
            blocks.append((heading, "\n".join(code) + "\n"))
            code = None
        elif code is not None:
            code.append(line)
    return blocks


def test_the_readme_has_python_blocks() -> None:
    headings = [heading for heading, _ in python_blocks()]
    assert len(headings) >= 5 and "Captum usage" in headings


@pytest.mark.parametrize(
    "heading, code",
    [
        pytest.param(*block, id=block[0], marks=[pytest.mark.slow] * (block[0] in SLOW_SECTIONS))
        for block in python_blocks()
    ],
)
def test_every_python_block_runs_as_written(heading: str, code: str, tmp_path: Path) -> None:
    script = tmp_path / "block.py"
    script.write_text(code)
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),  # the top-level `metrics` package, as an installed checkout
        "HF_HUB_OFFLINE": "1",  # no download may happen
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"README block under {heading!r} failed:\n{done.stderr[-3000:]}"


def test_the_readme_says_which_tests_its_command_runs() -> None:
    """The test command deselects the slow tests (pyproject's addopts): the README says so, and
    says which tests are slow (the notebooks among them)."""
    import tomllib

    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    assert "-m 'not slow'" in options["ini_options"]["addopts"]
    text = " ".join(README.read_text().split())
    assert "runs every test except those marked `slow`" in text
    assert "`pytest -m slow`" in text
    notebook_tests = (ROOT / "tests" / "app" / "test_tutorials.py").read_text()
    assert re.search(r"@pytest\.mark\.slow\s+(@.*\s+)*def test_tutorial_runs", notebook_tests)


@pytest.mark.slow
def test_every_number_in_the_readme_is_what_the_scripts_compute() -> None:
    from benchmarks import readme_numbers

    fresh = {name: make() for name, (make, _) in readme_numbers.BLOCKS.items()}
    _, differences = readme_numbers.check(README.read_text(), fresh)
    assert not differences, "\n".join(map(str, differences))
    # the prose: "Grad-CAM++ and Grad-CAM+ give the same scores to within 0.2 %"
    assert "same scores to within 0.2 %" in README.read_text()
    lines = fresh["compare"]
    table = lines.index(next(line for line in lines if line.startswith("relative performance")))
    after = lines.index(next(line for line in lines[table:] if line.startswith("pairwise")))
    pairs = [line for line in lines[table:after] if "Grad-CAM++ vs Grad-CAM+ " in line]
    assert len(pairs) == 2  # pre- and post-softmax, in the relative-performance table
    assert all(abs(readme_numbers.numbers(line)[0] - 1) < 0.002 for line in pairs), pairs


def test_the_number_check_finds_a_stale_number() -> None:
    from benchmarks import readme_numbers

    text = README.read_text()
    first, end = readme_numbers.block_lines(text, "walls")
    rows = [line for line in text.splitlines()[first:end] if "±" in line]
    fresh_walls = [*rows, f"{readme_numbers.EVEN} 70.7"]
    first, end = readme_numbers.block_lines(text, "compare")
    fresh_compare = text.splitlines()[first:end]
    same = {"compare": fresh_compare, "walls": fresh_walls}
    assert readme_numbers.check(text, same) == (text, [])
    mean = readme_numbers.numbers(rows[0])[0]
    stale = text.replace(rows[0], rows[0].replace(f"{mean:.1f} ±", f"{mean + 0.2:.1f} ±"))
    fixed, differences = readme_numbers.check(stale, same)
    assert len(differences) == 1 and fixed == text  # found, and --write puts it right
