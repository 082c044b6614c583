"""``report.md`` of a ``camplus compare`` run: the settings, the tables and the figures on one page.

The tables have the shape of Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with
positive gradients" (arXiv:2205.10838), tables 1-2; the figures are their figure 6 (per-image
relative performance) and figures 3-4 (Grad-CAM++ alphas).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from camplus_app.gallery import RATIO, Gallery, gallery_contrast
from camplus_app.labels import shown_name
from camplus_app.provenance import Provenance
from metrics.choices import PAPERS, chosen
from metrics.functional import TIE_RTOL
from metrics.intervals import RESAMPLES
from metrics.result import EvaluationResult
from metrics.tables import Tables

if TYPE_CHECKING:
    from camplus_app.datasets import Listing

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
    metrics: Sequence[str] = (PAPERS,)  #: ``--metrics`` (:mod:`metrics.choices`)
    layout: str = "auto"  #: ``--layout``: how the CAM layer's tensor was read
    unmatched: Mapping[str, str] = field(default_factory=dict)  #: class folders left out, why
    #: files of the class folders not read (looping links, other formats...), why
    skipped: Mapping[str, str] = field(default_factory=dict)
    provenance: Provenance | None = None  #: software, machine and command of the last attempt
    earlier_attempts: Sequence[Mapping[str, Any]] = ()  #: the provenance of the earlier ones
    #: a class-folder data set as it was read: every folder's class, duplicates, hidden files
    listing: Listing | None = None


def markdown_report(
    facts: RunFacts,
    result: EvaluationResult,
    tables: Tables,
    summary: Mapping[str, Any],
    figures: Sequence[str],
    unreadable: Sequence[Mapping[str, Any]],
    galleries: Sequence[Gallery] = (),
) -> str:
    """The report as Markdown, rendering ``tables`` (built once by
    :meth:`EvaluationResult.tables`); ``figures`` are the image files written beside it. Values
    are shown as ``value [low, high]`` (95 % paired bootstrap, seeded by ``facts.seed``) to the
    digits their intervals support (:mod:`metrics.digits`), ``n/a`` with a note where the scores
    leave a metric undefined."""
    sections = [
        _settings_section(facts, result, summary),
        _scores_section(facts, tables),
        _pairs_section(facts, tables),
        _figures_section(figures),
        _gallery_section(galleries, result),
        _provenance_section(facts),
        _classes_section(facts.listing),
        _lists_section(facts, unreadable),
        _files_section(),
    ]
    return "\n".join(line for section in sections for line in section)


def _data_text(facts: RunFacts) -> str:
    data = ", ".join(facts.data) if facts.data else "the bundled photographs"
    if facts.classes is not None:
        data += f" ({facts.classes} class folders, {facts.listed} images)"
    return data


def _explained_text(facts: RunFacts) -> str:
    if facts.classes is not None:
        return "the true class (from the class folder)"
    if facts.target is not None:
        return f"class {facts.target} ({facts.target_name})"
    return "the predicted class"


def _settings_section(
    facts: RunFacts, result: EvaluationResult, summary: Mapping[str, Any]
) -> list[str]:
    """The title, the table of settings and what ``Y`` and ``O`` are."""
    selection = f"{facts.images} of {facts.listed}"
    if facts.limit is not None and facts.limit < facts.listed:
        selection += f" (--limit {facts.limit} --seed {facts.seed})"
    rows = [
        ("data", _data_text(facts)),
        ("model", f"{facts.model}, CAM layer `{facts.layer}`, read with `--layout {facts.layout}`"),
        ("methods", ", ".join(facts.methods)),
        ("explained class", _explained_text(facts)),
        ("scores", facts.scores),
        ("threshold", "none" if facts.threshold is None else f"{facts.scores} > {facts.threshold}"),
        ("images", selection),
        ("scored", f"{summary['scored']} (above the threshold)"),
        ("below the threshold", str(summary["below threshold"])),
        ("unreadable", str(summary["unreadable"])),
        ("batch size", str(facts.batch_size)),
        ("processes (last attempt)", str(summary["processes"])),
    ]
    if facts.listing is not None:
        rows.append(("class folders read as", facts.listing.source))
        rows.append(("duplicates", _duplicates_text(facts.listing)))
    if chosen(facts.metrics):
        rows.append(("metrics", ", ".join(facts.metrics)))
    if result.undefined:
        rows.append(("n/a under these scores", ", ".join(result.undefined)))
    if summary.get("images per second"):
        rows.append(("images/s (all attempts)", f"{summary['images per second']:.3g}"))
    return [
        f"# camplus compare: {facts.model} on {_data_text(facts)}",
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
    ]


def _scores_section(facts: RunFacts, tables: Tables) -> list[str]:
    return [
        "",
        "## Scores",
        "",
        "Average drop (lower is better), increase in confidence and win percentage (higher is",
        "better), in %. Each value is followed by its 95 % interval, a paired BCa",
        f"bootstrap over the images ({RESAMPLES} resamples drawing the same images for every",
        f"method, seed {facts.seed}), and printed to the digits the interval supports; the CSV",
        "files keep every digit. Win %: a tie (O within a relative",
        f"{TIE_RTOL:g} of the best) is shared.",
        *_choices_text(facts),
        "",
        tables.scores.text(markdown=True),
    ]


def _choices_text(facts: RunFacts) -> list[str]:
    """One line per chosen perturbation metric: what it is and which way is better."""
    choices = chosen(facts.metrics)
    if not choices:
        return []
    return [
        "",
        "The chosen metrics, per image on each method's map and averaged, with "
        f"{_SCORES[facts.scores]}:",
        "",
        *(f"- `{c.column}` ({c.direction}): {c.meaning}." for c in choices),
    ]


def _pairs_section(facts: RunFacts, tables: Tables) -> list[str]:
    """Relative performance and the pairwise comparisons (two or more methods)."""
    lines = []
    if tables.relative_performance is not None:
        lines += [
            "",
            "## Relative performance (Lerma & Lucas, tables 1-2)",
            "",
            "The geometric mean over the images of `O'/O` for each pair, and the mean and",
            "standard deviation of `log(O'/O)`, with their intervals. `equal` marks a pair whose",
            "value and interval lie within float32 rounding of equality.",
            "",
            tables.relative_performance.text(markdown=True),
        ]
    if tables.pairwise is not None:
        lines += [
            "",
            "## Pairwise",
            "",
            "For each pair, the share of images on which the first method's `O` is higher (with",
            f"its interval), the ties (within a relative {TIE_RTOL:g}, counted apart), the share",
            "the second wins, and the p-value of an exact two-sided sign test on the images not",
            "tied.",
            *(
                [
                    "`<metric> first - second`: the mean over the images of the first method's",
                    "value minus the second's, with its paired bootstrap interval.",
                ]
                if chosen(facts.metrics)
                else []
            ),
            "",
            tables.pairwise.text(markdown=True),
        ]
    return lines


def _figures_section(figures: Sequence[str]) -> list[str]:
    lines = []
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
    return lines


def _gallery_section(galleries: Sequence[Gallery], result: EvaluationResult) -> list[str]:
    if not galleries:
        return []
    contrast = gallery_contrast(result)
    lines = [
        "",
        "## Gallery: where the methods that differ most disagree",
        "",
        f"For the pairs of methods whose per-image `{contrast}` lies farthest from",
        f"{'1' if contrast == RATIO else '0'}, the images on which each of the two is most",
        "ahead: the image, then every method's map (min-max normalised, as for `E`), with the",
        "class, `Y` and each method's `O`.",
    ]
    for gallery in galleries:
        title = gallery.title.splitlines()[0]
        lines += [
            "",
            f"### {title}",
            "",
            "Images, top to bottom: " + ", ".join(f"`{name}`" for name in gallery.images),
            "",
            f"![{title}]({gallery.file}.png)",
        ]
    return lines


def _provenance_section(facts: RunFacts) -> list[str]:
    if facts.provenance is None:
        return []
    return [
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


def _duplicates_text(listing: Listing) -> str:
    copies = sum(map(len, listing.duplicates.values()))
    if not copies:
        return "none (no two files with the same bytes)"
    scored = "scored too (--keep-duplicates)" if listing.keep_duplicates else "not scored"
    files = "1 file" if copies == 1 else f"{copies} files"
    return f"{files} with the bytes of another, {scored} (listed below)"


def _classes_section(listing: Listing | None) -> list[str]:
    """Every class folder with the class it was read as, and how (also ``classes.csv``); the
    folders merged, the empty ones, the duplicates, the near duplicates, the hidden files."""
    if listing is None:
        return []
    lines = [
        "",
        f"## Class folders ({len(listing.folders)}, also in classes.csv)",
        "",
        f"Each folder of the data set, the class it was read as and how, through {listing.source}.",
        "",
        "| folder | class | class name | matched by | images | note |",
        "|---|---|---|---|---|---|",
        *(
            "| "
            + " | ".join(
                _cell(value)
                for value in (
                    row.folder,
                    "" if row.class_index is None else row.class_index,
                    row.class_name or "",
                    row.matched,
                    row.images,
                    row.note,
                )
            )
            + " |"
            for row in listing.folders
        ),
    ]
    if listing.merged:
        lines += ["", "## Class folders merged (--merge-classes)", ""]
        lines += [
            f"- class {index}: " + ", ".join(f"`{_cell(n)}`" for n in names)
            for index, names in listing.merged.items()
        ]
    if listing.empty:
        lines += ["", f"## Empty class folders ({len(listing.empty)}, no image file)", ""]
        lines += _at_most([f"- `{_cell(name)}`" for name in listing.empty])
    if listing.duplicates:
        scored = "scored too (--keep-duplicates)" if listing.keep_duplicates else "not scored"
        lines += [
            "",
            f"## Duplicates ({len(listing.duplicates)} pictures in more than one file)",
            "",
            f"The file scored, then the files with the same bytes (BLAKE2b), {scored}.",
            "",
        ]
        lines += _at_most(
            [
                f"- `{_cell(first)}`: " + ", ".join(f"`{_cell(p)}`" for p in rest)
                for first, rest in listing.duplicates.items()
            ]
        )
    if listing.near_duplicates:
        lines += [
            "",
            f"## Near duplicates ({len(listing.near_duplicates)} groups, all scored)",
            "",
            "Files with other bytes but the same 8 x 8 average hash: maybe the same picture at",
            "another size or in another encoding. Listed, not removed.",
            "",
        ]
        lines += _at_most(
            ["- " + ", ".join(f"`{_cell(p)}`" for p in group) for group in listing.near_duplicates]
        )
    if listing.hidden:
        lines += ["", f"## Hidden files and folders ({len(listing.hidden)}, not read)", ""]
        lines += _at_most([f"- `{_cell(name)}`" for name in listing.hidden])
    return lines


def _cell(value: object) -> str:
    """A value for a Markdown table cell or code span: invisible characters escaped, no
    ``|`` or backtick to end it."""
    return shown_name(str(value)).replace("|", "\\|").replace("`", "'")


def _lists_section(facts: RunFacts, unreadable: Sequence[Mapping[str, Any]]) -> list[str]:
    """The class folders left out, the files not read and the unreadable images."""
    lines = []
    if facts.unmatched:
        lines += ["", "## Class folders left out (--skip-unmatched)", ""]
        lines += [f"- `{_cell(name)}`: {why}" for name, why in facts.unmatched.items()]
    if facts.skipped:
        lines += ["", f"## Files of the class folders not read ({len(facts.skipped)})", ""]
        lines += _at_most([f"- `{name}`: {why}" for name, why in facts.skipped.items()])
    if unreadable:
        lines += ["", f"## Unreadable images ({len(unreadable)}, all in unreadable.csv)", ""]
        lines += _at_most([f"- `{row['image']}`: {row['error']}" for row in unreadable])
    return lines


def _at_most(items: list[str]) -> list[str]:
    """The first :data:`SHOWN_UNREADABLE` items, and how many more there are."""
    more = len(items) - SHOWN_UNREADABLE
    return items[:SHOWN_UNREADABLE] + ([f"- and {more} more"] if more > 0 else [])


def _files_section() -> list[str]:
    return [
        "",
        "Files: `scores.csv`, `relative_performance.csv`, `pairwise.csv` (full precision, each",
        "value followed by `<column> ci low` and `<column> ci high`; `n/a` and a `note` where",
        "the scores leave a value undefined), `images.csv` (per image, method and kind of map),",
        "`dataset.csv` (the images scored, by position), `classes.csv` (a class-folder data",
        "set's folders, each with the class it was read as), each plot as PNG (200 dpi) and SVG,",
        "each gallery figure as PNG, `manifest.json` (the settings and the provenance), `parts/`",
        "(the raw per-batch results).",
        "",
    ]


__all__ = ["RunFacts", "markdown_report"]
