"""The numbers printed in the docs, computed again: checked, or written into the pages.

    python -m benchmarks.readme_numbers            # compute, list what differs beyond noise
    python -m benchmarks.readme_numbers --write    # compute, write them into the pages

Two blocks of the documentation (the pages of ``PAGES_OF``) hold computed numbers, each after a
marker line:

- ``<!-- numbers: compare -->``: the output of ``camplus compare`` on the bundled photographs;
  each line shown is the line of a fresh run with the same labels (its text with the numbers
  left out), so the README may show a subset of the lines;
- ``<!-- numbers: walls -->``: the dead-zone table of ``python -m camplus_app.walls``
  (Taimeskhanov et al., table 1), mean and std per method, and the score of an even map.

Noise: the compare numbers are float32 model outputs, reproducible to about 4 significant
digits across CPUs (rounding-noise values such as a log mean of 1e-7 for two methods that are
equal to within rounding, to 1e-5); the walls numbers come from a model trained on one torch
thread, reproducible to 0.1 across CPUs (one unit of the last digit printed).
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The page that prints each block of numbers.
PAGES_OF = {"compare": ROOT / "docs" / "cli.md", "walls": ROOT / "docs" / "walls.md"}
#: Every page with a block of numbers.
PAGES = sorted(set(PAGES_OF.values()))
#: A number in a line of output: not part of a word (``lite0``) or of another number.
NUMBER = re.compile(r"(?<![\w.+-])[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?(?![\w.])")
#: Tolerances of the compare block: relative, and absolute for values at rounding noise.
COMPARE_RTOL, COMPARE_ATOL = 2e-3, 1e-5
#: Tolerance of the walls table (mu x 100): one unit of the last digit printed.
WALLS_ATOL = 0.1 + 1e-9
#: The words before the dead-zone mass of an evenly spread map.
EVEN = "a map spread evenly would score"


@dataclass
class Difference:
    """A printed line whose numbers differ from the fresh ones beyond their noise."""

    block: str
    printed: str
    computed: str

    def __str__(self) -> str:
        return f"{self.block}: printed {self.printed!r}, computed {self.computed!r}"


def key(line: str) -> str:
    """A line with its numbers left out and its spaces collapsed: what identifies it."""
    return " ".join(NUMBER.sub("#", line).replace("`", "").split())


def numbers(line: str) -> list[float]:
    return [float(n) for n in NUMBER.findall(line)]


def block_lines(text: str, name: str) -> tuple[int, int]:
    """The first and one-past-last line numbers of the block after ``<!-- numbers: name -->``
    (a fenced block or a table)."""
    lines = text.splitlines()
    start = lines.index(f"<!-- numbers: {name} -->") + 1
    if lines[start].startswith("```"):
        end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
        return start + 1, end
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return start, end


def compare_output() -> list[str]:
    """The lines ``camplus compare`` prints for the bundled photographs (a fresh run)."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "camplus_app", "compare", "-o", folder + "/run"]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
    return [line.rstrip() for line in done.stdout.splitlines() if line.strip()]


def walls_output() -> list[str]:
    """The walls table as README table rows, with the line about an even map."""
    from camplus_app.walls.experiment import run_walls

    report = run_walls()
    rows = []
    for name, mass in report.masses.items():
        label = f"{name} (Captum `LayerGradCam`)" if name == "Grad-CAM" else name
        rows.append(f"| {label} | {100 * mass.mean():.1f} ± {100 * mass.std():.1f} |")
    even = 100 * float(report.dead_zone.double().mean().sqrt())
    rows.append(f"{EVEN} {even:.1f}")
    return rows


def compare_close(printed: list[float], computed: list[float]) -> bool:
    return len(printed) == len(computed) and all(
        math.isclose(a, b, rel_tol=COMPARE_RTOL, abs_tol=COMPARE_ATOL)
        for a, b in zip(printed, computed, strict=True)
    )


def walls_close(printed: list[float], computed: list[float]) -> bool:
    return len(printed) == len(computed) and all(
        abs(a - b) <= WALLS_ATOL for a, b in zip(printed, computed, strict=True)
    )


BLOCKS: dict[str, tuple[Callable[[], list[str]], Callable[[list[float], list[float]], bool]]] = {
    "compare": (compare_output, compare_close),
    "walls": (walls_output, walls_close),
}


def check(text: str, fresh: dict[str, list[str]]) -> tuple[str, list[Difference]]:
    """A page's text with every computed line replaced by its fresh version, and the lines
    whose numbers differ beyond noise. A line of a block without a fresh line of the same key
    is a difference too (the page shows something the command no longer prints). Only the
    blocks whose marker is on the page are checked."""
    lines = text.splitlines()
    differences = []
    for name, computed in fresh.items():
        if f"<!-- numbers: {name} -->" not in lines:
            continue
        close = BLOCKS[name][1]
        by_key = {key(line): line for line in computed}
        first, end = block_lines(text, name)
        for i in range(first, end):
            line = lines[i]
            if not NUMBER.search(line) or line.startswith("|---"):
                continue
            match = by_key.get(key(line))
            if match is None:
                differences.append(Difference(name, line, "(no such line)"))
            else:
                if not close(numbers(line), numbers(match)):
                    differences.append(Difference(name, line, match))
                lines[i] = match
    text = "\n".join(lines) + "\n"
    if "<!-- numbers: walls -->" not in lines:
        return text, differences
    even = next(line for line in fresh["walls"] if line.startswith(EVEN))
    printed = re.search(re.escape(EVEN) + r" (\d+\.\d)", text)
    if printed is None or not walls_close([float(printed[1])], numbers(even)):
        differences.append(Difference("walls", printed[0] if printed else "(none)", even))
    else:
        text = text.replace(printed[0], even)
    return text, differences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.readme_numbers", description=__doc__
    )
    parser.add_argument("--write", action="store_true", help="write the numbers into the pages")
    args = parser.parse_args(argv)
    fresh = {name: make() for name, (make, _) in BLOCKS.items()}
    found = False
    for page in PAGES:
        new_text, differences = check(page.read_text(), fresh)
        for difference in differences:
            print(f"{page.relative_to(ROOT)}: {difference}")
        found = found or bool(differences)
        if args.write:
            page.write_text(new_text)
            print(f"wrote {page}")
    return 1 if found and not args.write else 0


if __name__ == "__main__":
    raise SystemExit(main())
