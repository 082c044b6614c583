"""``report.md`` of a ``camplus compare`` run: the settings, the tables and the figures on one page.

The tables have the shape of Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with
positive gradients" (arXiv:2205.10838), tables 1-2; the figures are their figure 6 (per-image
relative performance) and figures 3-4 (Grad-CAM++ alphas).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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


def markdown_report(
    facts: RunFacts,
    result: EvaluationResult,
    summary: dict[str, Any],
    figures: Sequence[str],
    unreadable: Sequence[dict[str, Any]],
) -> str:
    """The report as Markdown; ``figures`` are the image files written beside it."""
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
        "better), in %.",
        "",
        format_table(result.summary(), markdown=True),
    ]
    if len(result.methods) > 1:
        lines += [
            "",
            "## Relative performance (Lerma & Lucas, tables 1-2)",
            "",
            "The geometric mean over the images of `O'/O` for each pair, and the mean and",
            "standard deviation of `log(O'/O)`.",
            "",
            format_table(result.relative_performance(), markdown=True),
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
        "Files: `scores.csv`, `relative_performance.csv`, `images.csv` (per image, method and",
        "kind of map), `dataset.csv` (the images scored, by position), `manifest.json` (the",
        "settings), `parts/` (the raw per-batch results).",
        "",
    ]
    return "\n".join(lines)


__all__ = ["RunFacts", "markdown_report"]
