"""``report.md`` of a ``camplus compare`` run: the settings, the tables and the figures on one page.

The tables have the shape of Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with
positive gradients" (arXiv:2205.10838), tables 1-2; the figures are their figure 6 (per-image
relative performance) and figures 3-4 (Grad-CAM++ alphas).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from camplus_app.gallery import Gallery
from camplus_app.provenance import Provenance
from metrics.digits import with_intervals
from metrics.intervals import RESAMPLES
from metrics.result import EvaluationResult
from metrics.tables import format_table

#: Unreadable images listed in the report itself (all are in unreadable.csv).
SHOWN_UNREADABLE = 20
#: What ``Y`` and ``O`` are under each ``--scores``.
_SCORES = {
    "softmax": "softmax probabilities",
    "sigmoid": "sigmoid probabilities of the label",
    "raw": "the model's raw outputs",
}


@dataclass(frozen=True)
class RunFacts:
    """What the report says about a run besides its results."""

    data: Sequence[str]  #: the DATA arguments (empty: the bundled photographs)
    model: str
    layer: str
    methods: Sequence[str]
    threshold: float | None
    batch_size: int
    images: int  #: the images of the run (after --limit)
    listed: int  #: the images found in the data
    classes: int | None  #: class folders of a labelled data set (None: not labelled)
    target: int | None  #: the class given with --target
    target_name: str | None  #: its name
    limit: int | None
    seed: int
    scores: str = "softmax"  #: ``--scores``: how the outputs became Y and O
    unmatched: Mapping[str, str] = field(default_factory=dict)  #: class folders left out, why
    #: files of the class folders not read (looping links, other formats...), why
    skipped: Mapping[str, str] = field(default_factory=dict)
    provenance: Provenance | None = None  #: software, machine and command of the last attempt
    earlier_attempts: Sequence[Mapping[str, Any]] = ()  #: the provenance of the earlier ones


def markdown_report(
    facts: RunFacts,
    result: EvaluationResult,
    summary: dict[str, Any],
    figures: Sequence[str],
    unreadable: Sequence[dict[str, Any]],
    galleries: Sequence[Gallery] = (),
) -> str:
    """The report as Markdown; ``figures`` are the image files written beside it. Values are
    shown as ``value [low, high]`` (95 % paired bootstrap, seeded by ``facts.seed``) to the
    digits their intervals support (:mod:`metrics.digits`)."""
    data = ", ".join(facts.data) if facts.data else "the bundled photographs"
    if facts.classes is not None:
        data += f" ({facts.classes} class folders, {facts.listed} images)"
    explained = (
        "the true class (from the class folder)"
        if facts.classes is not None
        else (
            f"class {facts.target} ({facts.target_name})"
            if facts.target is not None
            else "the predicted class"
        )
    )
    selection = f"{facts.images} of {facts.listed}"
    if facts.limit is not None and facts.limit < facts.listed:
        selection += f" (--limit {facts.limit} --seed {facts.seed})"
    rows = [
        ("data", data),
        ("model", f"{facts.model}, CAM layer `{facts.layer}`"),
        ("methods", ", ".join(facts.methods)),
        ("explained class", explained),
        ("scores", facts.scores),
        ("threshold", "none" if facts.threshold is None else f"{facts.scores} > {facts.threshold}"),
        ("images", selection),
        ("scored", f"{summary['scored']} (above the threshold)"),
        ("below the threshold", str(summary["below threshold"])),
        ("unreadable", str(summary["unreadable"])),
        ("batch size", str(facts.batch_size)),
        ("processes (last attempt)", str(summary["processes"])),
    ]
    if summary.get("images per second"):
        rows.append(("images/s (all attempts)", f"{summary['images per second']:.3g}"))
    lines = [
        f"# camplus compare: {facts.model} on {data}",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in rows),
        "",
        "Each method's explanation map `E = L ⊙ I` (the heatmap, min-max normalised and",
        "upsampled, times the image) is scored on the explained class: `Y` on the image, `O` on",
        f"`E`, both {_SCORES[facts.scores]}. Maps come from the gradients of the logits",
        "(pre-softmax) and of the softmax output (post-softmax), as in Lerma & Lucas (2022),",
        "section 4.",
        "",
        "## Scores",
        "",
        "Average drop (lower is better), increase in confidence and win percentage (higher is",
        "better), in %. Each value is followed by its 95 % interval, a paired percentile",
        f"bootstrap over the images ({RESAMPLES} resamples drawing the same images for every",
        f"method, seed {facts.seed}), and printed to the digits the interval supports; the CSV",
        "files keep every digit. Win %: a tie (O within a relative 1e-4 of the best) is shared.",
        "",
        format_table(
            with_intervals(result.summary(intervals=True, seed=facts.seed)), markdown=True
        ),
    ]
    if len(result.methods) > 1:
        lines += [
            "",
            "## Relative performance (Lerma & Lucas, tables 1-2)",
            "",
            "The geometric mean over the images of `O'/O` for each pair, and the mean and",
            "standard deviation of `log(O'/O)`, with their intervals. `equal` marks a pair whose",
            "value and interval lie within float32 rounding of equality.",
            "",
            format_table(
                with_intervals(result.relative_performance(intervals=True, seed=facts.seed)),
                markdown=True,
            ),
            "",
            "## Pairwise",
            "",
            "For each pair, the share of images on which the first method's `O` is higher (with",
            "its interval), the ties (within a relative 1e-4, counted apart), the share the",
            "second wins, and the p-value of an exact two-sided sign test on the images not tied.",
            "",
            format_table(with_intervals(result.pairwise(seed=facts.seed)), markdown=True),
        ]
    if "relative_performance.png" in figures:
        lines += [
            "",
            "## Per image (Lerma & Lucas, figure 6)",
            "",
            "![Per-image relative performance of each pair of methods](relative_performance.png)",
        ]
    if "alphas.png" in figures:
        lines += [
            "",
            "## Grad-CAM++ alphas (Lerma & Lucas, figures 3-4)",
            "",
            "The non-zero alphas of the pre-softmax maps of the scored images.",
            "",
            "![Histogram of the Grad-CAM++ alphas](alphas.png)",
        ]
    if galleries:
        lines += [
            "",
            "## Gallery: where the methods that differ most disagree",
            "",
            "For the pairs of methods whose per-image `O'/O` lies farthest from 1, the images on",
            "which each of the two is most ahead: the image, then every method's map (min-max",
            "normalised, as for `E`), with the class, `Y` and each method's `O`.",
        ]
        for gallery in galleries:
            lines += [
                "",
                f"### {gallery.title.splitlines()[0]}",
                "",
                "Images, top to bottom: " + ", ".join(f"`{name}`" for name in gallery.images),
                "",
                f"![{gallery.title.splitlines()[0]}]({gallery.file}.png)",
            ]
    if facts.provenance is not None:
        lines += [
            "",
            "## Provenance",
            "",
            "| | |",
            "|---|---|",
            *(f"| {key} | {value} |" for key, value in facts.provenance.markdown_rows()),
            *(
                f"| earlier attempt {number} | started {attempt['started']}, "
                f"{attempt['processes']} processes x {attempt['threads']} threads, "
                f"`{' '.join(attempt['command'])}` |"
                for number, attempt in enumerate(facts.earlier_attempts, start=1)
            ),
        ]
    if facts.unmatched:
        lines += ["", "## Class folders left out (--skip-unmatched)", ""]
        lines += [f"- `{name}`: {why}" for name, why in facts.unmatched.items()]
    if facts.skipped:
        lines += ["", f"## Files of the class folders not read ({len(facts.skipped)})", ""]
        shown = list(facts.skipped.items())[:SHOWN_UNREADABLE]
        lines += [f"- `{name}`: {why}" for name, why in shown]
        if len(facts.skipped) > SHOWN_UNREADABLE:
            lines.append(f"- and {len(facts.skipped) - SHOWN_UNREADABLE} more")
    if unreadable:
        lines += ["", f"## Unreadable images ({len(unreadable)}, all in unreadable.csv)", ""]
        lines += [f"- `{row['image']}`: {row['error']}" for row in unreadable[:SHOWN_UNREADABLE]]
        if len(unreadable) > SHOWN_UNREADABLE:
            lines.append(f"- and {len(unreadable) - SHOWN_UNREADABLE} more")
    lines += [
        "",
        "Files: `scores.csv`, `relative_performance.csv`, `pairwise.csv` (full precision, each",
        "value followed by `<column> ci low` and `<column> ci high`), `images.csv` (per image,",
        "method and kind of map), `dataset.csv` (the images scored, by position), each figure",
        "as PNG (200 dpi) and SVG, `manifest.json` (the settings and the provenance), `parts/`",
        "(the raw per-batch results).",
        "",
    ]
    return "\n".join(lines)


__all__ = ["RunFacts", "markdown_report"]
