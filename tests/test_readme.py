"""The README and the docs pages run as written: every Python block, as a file of its own in a
fresh process (offline: random-init or bundled models), and every number they print is what the
scripts compute now (:mod:`benchmarks.readme_numbers`), within its noise. What the README says
about the tests and CI is what ``pyproject.toml`` and ``.ci/run`` do."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
#: The pages whose Python blocks run: the README and every page of the docs site.
PAGES = [README, *sorted(DOCS.glob("*.md"))]
#: Blocks that take minutes on a shared CPU (Quantus scores four methods with five metrics on
#: the bundled model), as (page, section heading).
SLOW_SECTIONS = {("metrics.md", "The metrics inside `quantus.evaluate`")}


def python_blocks(page: Path) -> list[tuple[str, str]]:
    """(section heading, code) of every ```python block of a page, in order."""
    blocks, heading, fence, code = [], "", None, []
    for line in page.read_text().splitlines():
        stripped = line.strip()
        if fence is None and stripped.startswith("```"):
            fence, code = stripped[3:], []
        elif fence is not None and stripped == "```":
            if fence == "python":
                blocks.append((heading, "\n".join(code) + "\n"))
            fence = None
        elif fence is not None:
            code.append(line)
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
    return blocks


def all_blocks() -> list[tuple[str, str, str]]:
    return [(page.name, *block) for page in PAGES for block in python_blocks(page)]


def test_the_pages_have_python_blocks() -> None:
    readme = [heading for heading, _ in python_blocks(README)]
    assert readme == ["Explain with Captum", "Beyond classification", "Score with Quantus"]
    assert len(all_blocks()) >= 7
    found = {(page, heading) for page, heading, _ in all_blocks()}
    assert found >= SLOW_SECTIONS


@pytest.mark.parametrize(
    "page, heading, code",
    [
        pytest.param(
            *block,
            id=f"{block[0]}: {block[1]}",
            marks=[pytest.mark.slow] * (block[:2] in SLOW_SECTIONS),
        )
        for block in all_blocks()
    ],
)
def test_every_python_block_runs_as_written(
    page: str, heading: str, code: str, tmp_path: Path
) -> None:
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
    assert done.returncode == 0, f"{page} block under {heading!r} failed:\n{done.stderr[-3000:]}"


def readme_text() -> str:
    return " ".join(README.read_text().split())


def test_the_readme_says_which_tests_its_command_runs() -> None:
    """The test command deselects the slow tests (pyproject's addopts): the README says so, and
    says which tests are slow (the notebooks among them)."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r"""^addopts = ".*-m 'not slow'.*"$""", pyproject, re.M)
    text = readme_text()
    assert "runs every test except those marked `slow`" in text
    assert "`pytest -m slow`" in text
    notebook_tests = (ROOT / "tests" / "app" / "test_tutorials.py").read_text()
    assert re.search(r"@pytest\.mark\.slow\s+(@.*\s+)*def test_tutorial_runs", notebook_tests)


def test_the_readme_says_what_ci_runs() -> None:
    """Each step of ``.ci/run``, in its order, is named in the README's account of CI."""
    ci = (ROOT / ".ci" / "run").read_text()
    text = readme_text()
    account = text[text.index("CI (`.ci/run`)") :]
    steps = [
        ("readme_command test-command", "that same test command"),
        ("ruff check .", "`ruff check`"),
        ("ruff format --check .", "`ruff format --check`"),
        ("lint-imports", "`lint-imports`"),
        ("mypy captum_camplus metrics camplus_app", "`mypy` on the three packages"),
        ('-e ".[docs]"', "`docs` extra"),
        ("mkdocs build --strict --site-dir", "`mkdocs build --strict`"),
        ("pytest -m slow", "`pytest -m slow`"),
    ]
    in_ci = [ci.index(command) for command, _ in steps]
    in_readme = [account.index(words) for _, words in steps]
    assert in_ci == sorted(in_ci)
    assert sorted(in_readme[:5]) == in_readme[:5] and in_readme[6] < in_readme[7]


@pytest.mark.slow
def test_the_readme_counts_the_slow_tests() -> None:
    """The README's "N slow tests": N is what pytest collects under ``-m slow`` (this one too)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "slow", "--collect-only", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    collected = re.search(r"^(\d+)/\d+ tests collected", done.stdout, re.M)
    assert collected is not None, done.stdout[-2000:]
    stated = re.search(r"The (\d+) slow tests", readme_text())
    assert stated is not None and int(stated[1]) == int(collected[1])


@pytest.mark.slow
def test_every_number_printed_is_what_the_scripts_compute() -> None:
    from benchmarks import readme_numbers

    fresh = {name: make() for name, (make, _) in readme_numbers.BLOCKS.items()}
    for page in readme_numbers.PAGES:
        _, differences = readme_numbers.check(page.read_text(), fresh)
        assert not differences, "\n".join(map(str, differences))
    # the prose of the compare page: "Grad-CAM++ and Grad-CAM+ give the same scores to within 0.2 %"
    prose = " ".join(readme_numbers.PAGES_OF["compare"].read_text().split())
    assert "give the same scores to within 0.2 %" in prose
    lines = fresh["compare"]
    table = lines.index(next(line for line in lines if line.startswith("relative performance")))
    after = lines.index(next(line for line in lines[table:] if line.startswith("pairwise")))
    pairs = [line for line in lines[table:after] if "Grad-CAM++ vs Grad-CAM+ " in line]
    assert len(pairs) == 2  # pre- and post-softmax, in the relative-performance table
    assert all(abs(readme_numbers.numbers(line)[0] - 1) < 0.002 for line in pairs), pairs
    quoted = re.search(
        r"relative performance ([\d.]+) for maps from the logits, ([\d.]+) from the softmax", prose
    )
    assert quoted is not None  # the prose quotes both values, within the numbers' noise
    computed = [readme_numbers.numbers(line)[0] for line in pairs]
    assert readme_numbers.compare_close([float(quoted[1]), float(quoted[2])], computed), computed


def test_every_block_of_numbers_is_on_a_page() -> None:
    from benchmarks import readme_numbers

    assert set(readme_numbers.PAGES_OF) == set(readme_numbers.BLOCKS)
    for name, page in readme_numbers.PAGES_OF.items():
        assert f"<!-- numbers: {name} -->" in page.read_text(), (name, page)


def test_the_number_check_finds_a_stale_number() -> None:
    from benchmarks import readme_numbers

    walls_page = readme_numbers.PAGES_OF["walls"].read_text()
    first, end = readme_numbers.block_lines(walls_page, "walls")
    rows = [line for line in walls_page.splitlines()[first:end] if "±" in line]
    fresh_walls = [*rows, f"{readme_numbers.EVEN} 70.7"]
    compare_page = readme_numbers.PAGES_OF["compare"].read_text()
    first, end = readme_numbers.block_lines(compare_page, "compare")
    fresh_compare = compare_page.splitlines()[first:end]
    same = {"compare": fresh_compare, "walls": fresh_walls}
    assert readme_numbers.check(walls_page, same) == (walls_page, [])
    assert readme_numbers.check(compare_page, same) == (compare_page, [])
    mean = readme_numbers.numbers(rows[0])[0]
    stale = walls_page.replace(rows[0], rows[0].replace(f"{mean:.1f} ±", f"{mean + 0.2:.1f} ±"))
    fixed, differences = readme_numbers.check(stale, same)
    assert len(differences) == 1 and fixed == walls_page  # found, and --write puts it right
