"""The benchmark's report: its rows, the Markdown tables, the targets met or not, CSV and JSON."""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from benchmarks.contenders import ALL_FOUR, FLOOR, OURS

#: Two runs of the same code differ by up to a few hundred KiB of RSS (pages of small objects).
MEMORY_SLACK_MIB = 1


@dataclass
class Row:
    name: str
    library: str
    times_ms: list[float] = field(default_factory=list)
    median_ms: float = math.nan
    iqr_pct: float = math.nan  #: interquartile range of the times, in % of their median
    map_ms: float = math.nan  #: the map arithmetic alone, from captured (A, g)
    ratio_to_floor: float = math.nan
    peak_extra_mib: float = math.nan
    max_dev_raw: float = math.nan
    max_dev_minmax: float = math.nan


@dataclass
class MetricRow:
    name: str
    scores: str
    forwards_per_image: float = math.nan
    times_ms: list[float] = field(default_factory=list)
    ms_per_image: float = math.nan
    ratio_to_floor: float = math.nan


def fmt(value: float, spec: str) -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


def _markdown(header: Sequence[str], left: int, cells: Sequence[Sequence[str]]) -> str:
    """A markdown table whose first ``left`` columns are left-aligned, the rest right-aligned."""
    align = ["---"] * left + ["---:"] * (len(header) - left)
    return "\n".join("| " + " | ".join(line) + " |" for line in (header, align, *cells))


def markdown_table(rows: Sequence[Row]) -> str:
    header = ["implementation", "median ms", "IQR %", "x floor", "map ms", "peak extra MiB"]
    header += ["max dev raw", "max dev min-max"]
    formats = {"median_ms": ".1f", "iqr_pct": ".0f", "ratio_to_floor": ".3f", "map_ms": ".1f"}
    formats |= {"peak_extra_mib": ".1f", "max_dev_raw": ".2e", "max_dev_minmax": ".2e"}
    cells = [[row.name, *(fmt(getattr(row, k), f) for k, f in formats.items())] for row in rows]
    return _markdown(header, 1, cells)


def metric_table(rows: Sequence[MetricRow]) -> str:
    header = ["metric evaluation (maps included)", "scores", "forwards per image"]
    header += ["ms per image", "x floor"]
    formats = {"forwards_per_image": ".2f", "ms_per_image": ".1f", "ratio_to_floor": ".2f"}
    cells = [
        [row.name, row.scores, *(fmt(getattr(row, k), f) for k, f in formats.items())]
        for row in rows
    ]
    return _markdown(header, 2, cells)


def targets(rows: Sequence[Row], device: str) -> list[tuple[str, str, bool]]:
    """The issue's targets: (what, measured, met) for what this run measured."""
    by_name = {row.name: row for row in rows}
    checks = []
    floor_ms = by_name[FLOOR].median_ms
    for name, bound in (*((n, 1.10) for n in OURS), (ALL_FOUR, 1.25)):
        row = by_name[name]
        what = "all four from one pass" if name == ALL_FOUR else name
        # (floor + map arithmetic) / floor: the same ratio without the noise of whole calls
        estimate = (floor_ms + row.map_ms) / floor_ms
        measured = f"{row.ratio_to_floor:.3f}x (floor + map ms: {estimate:.3f}x)"
        checks.append((f"{what} <= {bound:.2f}x floor", measured, row.ratio_to_floor <= bound))
    if device == "cpu":
        for peer, ours in (
            ("GradCAM", "Grad-CAM"),
            ("GradCAMPlusPlus", "Grad-CAM++"),
            ("HiResCAM", "HiResCAM"),
        ):
            if (peer_row := by_name.get(f"pytorch-grad-cam {peer}")) is not None:
                speedup = peer_row.median_ms / by_name[ours].median_ms
                checks.append(
                    (
                        f"{ours} >= 2.5x faster than pytorch-grad-cam {peer}",
                        f"{speedup:.2f}x",
                        speedup >= 2.5,
                    )
                )
    captum = by_name.get("Captum LayerGradCam")
    if captum is not None and not math.isnan(captum.peak_extra_mib):
        for name in (*OURS, ALL_FOUR):
            mine = by_name[name].peak_extra_mib
            checks.append(
                (
                    f"{name} peak extra memory <= Captum LayerGradCam's (+{MEMORY_SLACK_MIB} MiB)",
                    f"{mine:.1f} vs {captum.peak_extra_mib:.1f} MiB",
                    mine <= captum.peak_extra_mib + MEMORY_SLACK_MIB,
                )
            )
    return checks


def report(
    rows: Sequence[Row],
    metric_rows: Sequence[MetricRow],
    settings: dict[str, object],
    checks: Sequence[tuple[str, str, bool]],
    notes: Sequence[str],
    args: argparse.Namespace,
) -> None:
    """Print the markdown tables; write CSV and JSON if asked."""
    print(", ".join(f"{k}={v}" for k, v in settings.items()))
    print()
    print(markdown_table(rows))
    print()
    print("| target | measured | met |\n|---|---:|:---:|")
    for what, measured, met in checks:
        print(f"| {what} | {measured} | {'yes' if met else 'NO'} |")
    if metric_rows:
        print()
        print(metric_table(metric_rows))
    for note in notes:
        print(f"\nnote: {note}")
    if args.csv:
        with args.csv.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(asdict(rows[0])))
            writer.writeheader()
            for row in rows:
                values = asdict(row)
                values["times_ms"] = " ".join(f"{t:.3f}" for t in row.times_ms)
                writer.writerow(values)
    if args.json:
        payload = {
            "settings": settings,
            "rows": [asdict(row) for row in rows],
            "metric_rows": [asdict(row) for row in metric_rows],
            "targets": [{"target": w, "measured": m, "met": ok} for w, m, ok in checks],
        }
        args.json.write_text(json.dumps(payload, indent=2))


__all__ = [
    "MEMORY_SLACK_MIB",
    "MetricRow",
    "Row",
    "markdown_table",
    "metric_table",
    "report",
    "targets",
]
