"""``camplus compare``: the evaluation of Lerma & Lucas on a data set, streamed and resumable.

Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients"
(arXiv:2205.10838), section 4: each method's explanation map ``E = L (.) I`` is scored on the
explained class, with maps from the gradients of the logits and of the softmax.

The images are listed first (nothing is decoded), then DataLoader workers decode and preprocess
them batch by batch. Batch ``b`` is always the same images (positions ``b*B`` to ``(b+1)*B - 1``
of the listing), and each batch's per-image results go to this process's part file in the run
folder, synced to disk before the next batch. ``--resume`` scores only the batches missing from
the part files, so the final tables equal those of an uninterrupted run. Under ``torchrun``
every process scores every K-th missing batch into its own part file and the first one merges
them: the same batches, hence the same tables, as one process.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import shlex
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor

from camplus_app.datasets import (
    Batch,
    ImageDataset,
    ImageEntry,
    Listing,
    collate,
    find_images,
    select,
)
from camplus_app.runs import (
    PartWriter,
    RunFolder,
    RunFolderError,
    csv_text,
    open_run,
    part_name,
    read_manifest,
)
from camplus_app.runs import read_parts as read_part_records

if TYPE_CHECKING:
    from camplus_app.figures import AlphaHistogram
    from camplus_app.zoo import Classifier
    from metrics import BatchScorer, EvaluationResult

#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130
GRAD_CAM_PP = "Grad-CAM++"


@dataclass
class Settings:
    """What decides a run's results; a resumed run keeps every one of them."""

    data: list[str] = field(default_factory=list)  #: paths (absolute) or bundled names
    model: str | None = None
    weights: str | None = None
    layer: str | None = None
    methods: list[str] = field(default_factory=list)
    threshold: float | None = None
    target: int | None = None
    batch_size: int = 8
    limit: int | None = None
    seed: int = 0
    skip_unmatched: bool = False


#: The option that sets each setting, for messages.
FLAGS = {
    "data": "DATA",
    "model": "--model",
    "weights": "--weights",
    "layer": "--layer",
    "methods": "--methods",
    "threshold": "--threshold",
    "target": "--target",
    "batch_size": "--batch-size",
    "limit": "--limit",
    "seed": "--seed",
    "skip_unmatched": "--skip-unmatched",
}


# --------------------------------------------------------------------------- processes


@dataclass
class Processes:
    """This process's place under ``torchrun`` (rank 0 of 1 without it)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    started: bool = False

    @classmethod
    def from_environment(cls) -> Processes:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    def device(self, device: torch.device) -> torch.device:
        """One GPU per process: ``cuda`` becomes ``cuda:<local rank>``."""
        if self.world > 1 and device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    def start(self, device: torch.device) -> None:
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            # the processes meet only at the start and the end; a long shard must not time out
            dist.init_process_group(backend, timeout=timedelta(days=7))
            self.started = True

    def stop(self) -> None:
        if self.started:
            dist.destroy_process_group()
            self.started = False

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value``, in rank order, on every process."""
        if self.world == 1:
            return [value]
        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def agree(self, error: str | None) -> str | None:
        """Every process's error, shared: the first one, or None if all went well."""
        return next((e for e in self.gather(error) if e is not None), None)

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


# --------------------------------------------------------------------------- the command


def run_compare(args: argparse.Namespace) -> int:
    """``camplus compare`` from parsed arguments; returns the exit status."""
    from camplus_app.cli import PROG, USAGE_ERROR, UsageError

    processes = Processes.from_environment()
    job: CompareJob | None = None
    try:
        job = CompareJob.prepare(args, processes)
        return job.run()
    except (UsageError, RunFolderError) as error:
        if processes.rank == 0:
            print(f"{PROG}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        if processes.rank == 0:
            message = job.interrupted_message() if job is not None else "interrupted"
            print(f"\n{message}", file=sys.stderr)
        processes.started = False  # the others are stopping too: no goodbye collective
        return INTERRUPTED
    finally:
        if job is not None:
            job.close()
        processes.stop()


@dataclass
class CompareJob:
    """A prepared ``camplus compare``: settings checked, model loaded, images listed."""

    args: argparse.Namespace
    processes: Processes
    settings: Settings
    classifier: Classifier
    listing: Listing
    entries: list[ImageEntry]  #: the images to score (after --limit), by position
    output: Path
    folder: RunFolder | None = None  #: held by rank 0
    attempt: int = 0
    plan: list[int] = field(default_factory=list)  #: the batches this attempt scores

    @classmethod
    def prepare(cls, args: argparse.Namespace, processes: Processes) -> CompareJob:
        """Check the input and load everything, on every process; bad input raises UsageError."""
        from camplus_app import zoo
        from camplus_app.cli import UsageError, _device, _methods, output_path

        error = None
        try:
            output = output_path(args.output)
            previous = _previous_settings(output) if args.resume else None
            settings = _settings(args, previous, _methods)
            device = processes.device(_device(args.device))
        except (UsageError, RunFolderError) as failure:
            error = str(failure)
        processes.start(torch.device("cpu") if error else device)
        if (error := processes.agree(error)) is not None:
            raise UsageError(error)
        try:
            settings.model = settings.model or zoo.DEFAULT_MODEL
            classifier = zoo.load_classifier(settings.model, settings.weights, settings.layer)
            classifier = classifier.to(device)
            settings.layer = classifier.layer_name
            if args.target is not None:
                target = classifier.class_index(args.target)
                _check_unchanged(previous, "target", target, output)
                settings.target = target
            listing = find_images(settings.data, classifier, settings.skip_unmatched)
            if listing.labelled and settings.target is not None:
                raise UsageError(
                    "--target and a data set of class folders both name the class to explain: "
                    "leave out --target to explain each image's true class"
                )
        except (ValueError, FileNotFoundError, ImportError, UsageError, RunFolderError) as failure:
            error = str(failure)
        if (error := processes.agree(error)) is not None:
            raise UsageError(error)
        entries = [
            listing.entries[p] for p in select(len(listing.entries), settings.limit, settings.seed)
        ]
        return cls(args, processes, settings, classifier, listing, entries, output)

    @property
    def batches(self) -> int:
        return -(-len(self.entries) // self.settings.batch_size)

    def batch_positions(self, number: int) -> range:
        size = self.settings.batch_size
        return range(number * size, min((number + 1) * size, len(self.entries)))

    def run(self) -> int:
        from camplus_app.cli import UsageError

        error = None
        if self.processes.rank == 0:
            try:
                self._take_folder()
            except (RunFolderError, UsageError) as failure:
                error = str(failure)
        if (error := self.processes.agree(error)) is not None:
            raise UsageError(error)
        self.attempt, self.plan = self.processes.share((self.attempt, self.plan))
        started = time.perf_counter()
        try:
            scored = sum(self.processes.gather(self._score()))  # waits for every shard
        except Exception:
            self._discard_if_empty()
            raise
        elapsed = time.perf_counter() - started
        if self.processes.rank != 0:
            return 0
        return self._finish(scored, elapsed)

    def close(self) -> None:
        if self.folder is not None:
            self.folder.close()

    def _discard_if_empty(self) -> None:
        """After a failure: a new run that scored nothing leaves nothing behind (one that
        scored some batches stays, to be resumed)."""
        if self.folder is not None and next(read_part_records(self.output), None) is None:
            self.folder.discard()

    # ----------------------------------------------------------------------- rank 0: folder

    def _take_folder(self) -> None:
        """Lock the output folder, write or check the manifest and the listing, plan the
        batches still to score."""
        args = self.args
        folder = open_run(self.output, "compare", resume=args.resume, overwrite=args.overwrite)
        self.folder = folder
        settings = asdict(self.settings)
        if folder.previous is not None and folder.previous["settings"] != settings:
            changed = [k for k in settings if folder.previous["settings"].get(k) != settings[k]]
            raise RunFolderError(
                f"cannot resume the run in {self.output}: its settings changed meanwhile "
                f"({', '.join(FLAGS.get(k, k) for k in changed)})"
            )
        listing = _listing_csv(self.entries, self.listing)
        listing_file = self.output / "dataset.csv"
        if folder.previous is not None:
            _check_same_data(listing_file, listing, self.output)
        self.attempt = folder.start("compare", settings)
        if folder.previous is None:
            folder.write_text("dataset.csv", listing)
        done = {record["batch"] for record in _records(self.output, self.batches)}
        self.plan = [b for b in range(self.batches) if b not in done]
        for rank in range(self.processes.world):
            folder.file(part_name(self.attempt, rank))

    # ----------------------------------------------------------------------- every rank: score

    def _score(self) -> int:
        """Score this process's share of the planned batches; returns the images scored."""
        mine = self.plan[self.processes.rank :: self.processes.world]
        if not mine:
            return 0
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm

        from camplus_app.cli import LAYOUT
        from metrics import BatchScorer

        clf = self.classifier
        scorer = BatchScorer(
            clf.model,
            clf.layer,
            self.settings.methods,
            threshold=self.settings.threshold,
            layout=LAYOUT,
        )
        alphas = _AlphaCounter(scorer) if GRAD_CAM_PP in scorer.methods else None
        scorer.on_layer = alphas
        loader = DataLoader(
            ImageDataset(self.entries, clf.transform),
            batch_sampler=[list(self.batch_positions(b)) for b in mine],
            num_workers=self.args.workers,
            collate_fn=collate,
            pin_memory=self.classifier.device.type == "cuda",
        )
        total = sum(len(self.batch_positions(b)) for b in mine)
        where = f" (process {self.processes.rank} of {self.processes.world})"
        bar = tqdm(
            total=total,
            desc="scoring" + (where if self.processes.world > 1 else ""),
            unit="image",
            disable=self.args.quiet or self.processes.rank != 0,
        )
        writer = PartWriter(self.output / part_name(self.attempt, self.processes.rank))
        with bar, writer:
            for number, batch in zip(mine, loader, strict=True):
                writer.write(self._score_batch(number, batch, scorer, alphas))
                bar.update(len(batch.positions) + len(batch.failed))
        return total

    def _score_batch(
        self, number: int, batch: Batch, scorer: BatchScorer, alphas: _AlphaCounter | None
    ) -> dict[str, Any]:
        """One batch's part-file record: per image, the scores or why it could not be read."""
        images: list[dict[str, Any]] = [
            {"position": position, "error": error} for position, error in batch.failed
        ]
        if batch.images is not None:
            if alphas is not None:
                alphas.reset()
            scores = scorer(batch.images, self._labels(batch.positions), batch.positions).cpu()
            kept_rank = torch.cumsum(scores.kept.long(), 0) - 1
            for i, position in enumerate(scores.index.tolist()):
                row: dict[str, Any] = {
                    "position": position,
                    "target": int(scores.target[i]),
                    "Y": float(scores.y[i]),
                    "log Y": float(scores.log_y[i]),
                    "kept": bool(scores.kept[i]),
                }
                if row["kept"]:
                    k = int(kept_rank[i])
                    row["O"] = _nested(scores.o, k)
                    row["log O"] = _nested(scores.log_o, k)
                images.append(row)
        images.sort(key=lambda row: row["position"])
        record: dict[str, Any] = {"batch": number, "images": images}
        if alphas is not None and alphas.histogram.total:
            record["alphas"] = alphas.histogram.to_json()
        return record

    def _labels(self, positions: Tensor) -> Tensor | None:
        if self.settings.target is not None:
            return torch.full((len(positions),), self.settings.target, dtype=torch.long)
        if not self.listing.labelled:
            return None
        return torch.tensor([self.entries[p].label for p in positions.tolist()], dtype=torch.long)

    def interrupted_message(self) -> str:
        """What an interrupted run tells the user: how to go on, once the folder is taken."""
        if self.attempt == 0:
            return "interrupted before anything was scored"
        return (
            f"interrupted: the batches scored so far are saved in {self.output}; to go on "
            f"with the rest, run:\n  {self.resume_command()}"
        )

    def resume_command(self) -> str:
        from camplus_app.cli import PROG

        words = [PROG, "compare", *self.settings.data, "-o", str(self.output), "--resume"]
        return " ".join(shlex.quote(w) for w in words)

    # ----------------------------------------------------------------------- rank 0: merge

    def _finish(self, scored_now: int, elapsed: float) -> int:
        """Merge the part files into the tables, figures and report."""
        from camplus_app.cli import PROG, USAGE_ERROR, _write

        assert self.folder is not None
        records = {record["batch"]: record for record in _records(self.output, self.batches)}
        missing = [b for b in range(self.batches) if b not in records]
        if missing:
            print(
                f"{PROG}: error: {len(missing)} batches were not scored (did a process fail?); "
                f"to score them, run:\n  {self.resume_command()}",
                file=sys.stderr,
            )
            return USAGE_ERROR
        rows = [row for b in range(self.batches) for row in records[b]["images"]]
        counts = _counts(rows)
        summary = {
            **counts,
            "seconds": round(elapsed, 3),
            "images per second": round(scored_now / elapsed, 4) if elapsed > 0 else None,
            "processes": self.processes.world,
        }
        outputs = Outputs(self, rows, records.values())
        try:
            result = outputs.result()
        except NothingReadable as error:  # nothing worth keeping: a new run leaves nothing
            self.folder.discard()
            print(f"{PROG}: error: {error}", file=sys.stderr)
            return USAGE_ERROR
        except ValueError as error:  # no image above the threshold: a complete run, no tables
            self.folder.complete(summary)
            print(f"{PROG}: error: {error}", file=sys.stderr)
            return USAGE_ERROR
        outputs.write(result, summary)
        self.folder.complete(summary)
        if not self.args.quiet:
            clf = self.classifier
            _write(f"{clf.name}, layer {clf.layer_name}: " + result.format())
            _write(_summary_line(counts, scored_now, elapsed, self.processes.world))
            _write(f"results in {self.output}")
        return 0


class NothingReadable(ValueError):
    """Not one image of the run could be decoded."""


class _AlphaCounter:
    """``on_layer`` callback: the pre-softmax Grad-CAM++ alphas of a batch (Lerma & Lucas,
    figures 3-4), counted in an :class:`AlphaHistogram`."""

    def __init__(self, scorer: BatchScorer) -> None:
        from camplus_app.figures import AlphaHistogram

        self.method = scorer.methods[GRAD_CAM_PP]
        self._new = AlphaHistogram
        self.histogram = AlphaHistogram()

    def reset(self) -> None:
        self.histogram = self._new()

    def __call__(self, source: str, index: Tensor, activation: Tensor, gradient: Tensor) -> None:
        if source == "pre-softmax":
            self.histogram.add(self.method.alphas(activation, gradient))


# --------------------------------------------------------------------------- outputs


class Outputs:
    """The files of a finished run, from the merged per-image rows."""

    def __init__(
        self, job: CompareJob, rows: list[dict[str, Any]], records: Iterable[dict[str, Any]]
    ) -> None:
        self.job = job
        self.rows = rows
        self.records = list(records)

    def result(self) -> EvaluationResult:
        """The per-image scores as the metrics' :class:`EvaluationResult` (tables, formats).

        Raises:
            ValueError: no image could be read, or none passed the threshold.
        """
        from metrics import EvaluationResult

        settings = self.job.settings
        read = [row for row in self.rows if "error" not in row]
        kept = [row for row in read if row["kept"]]
        if not read:
            first = self.rows[0]
            raise NothingReadable(
                f"none of the {len(self.rows)} images could be read (the first: "
                f"{self.job.entries[first['position']].path}: {first['error']})"
            )
        if not kept:
            raise ValueError(
                f"no image has a score Y above the threshold {settings.threshold}: nothing to "
                "compare"
            )
        sources = list(kept[0]["O"])

        def column(key: str, dtype: torch.dtype = torch.float64) -> Tensor:
            return torch.tensor([row[key] for row in kept], dtype=dtype)

        def nested(key: str) -> dict[str, dict[str, Tensor]]:
            return {
                s: {
                    m: torch.tensor([row[key][s][m] for row in kept], dtype=torch.float64)
                    for m in settings.methods
                }
                for s in sources
            }

        return EvaluationResult(
            methods=list(settings.methods),
            maps_from=sources,
            index=column("position", torch.long),
            target=column("target", torch.long),
            y=column("Y"),
            log_y=column("log Y"),
            o=nested("O"),
            log_o=nested("log O"),
            dead_zone=None,
            softmax=True,
            threshold=settings.threshold,
            images_seen=len(read),
        )

    def alphas(self) -> AlphaHistogram | None:
        from camplus_app.figures import AlphaHistogram

        if GRAD_CAM_PP not in self.job.settings.methods:
            return None
        histogram = AlphaHistogram()
        for record in self.records:
            if "alphas" in record:
                histogram.merge(AlphaHistogram.from_json(record["alphas"]))
        return histogram

    def write(self, result: EvaluationResult, summary: dict[str, Any]) -> None:
        from camplus_app.figures import alpha_histogram, relative_performance_boxplot
        from camplus_app.report import markdown_report

        folder = self.job.folder
        assert folder is not None
        entries, categories = self.job.entries, self.job.classifier.categories
        image_rows = [
            {"image": entries[row["index"]].name, **row, "class name": categories[row["target"]]}
            for row in result.image_rows()
        ]
        folder.write_csv("scores.csv", result.summary())
        folder.write_csv("images.csv", image_rows)
        figures = {}
        if len(result.methods) > 1:
            folder.write_csv("relative_performance.csv", result.relative_performance())
            boxplot = relative_performance_boxplot(
                {
                    f"{source} maps": {pair: r.tolist() for pair, r in ratios.items()}
                    for source, ratios in result.relative_performance_per_image().items()
                }
            )
            figures["relative_performance.png"] = boxplot
        alphas = self.alphas()
        if alphas is not None and alphas.total:
            figures["alphas.png"] = alpha_histogram(alphas)
        for name, figure in figures.items():
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=100)
            folder.write_bytes(name, buffer.getvalue())
        unreadable = [
            {"position": p, "image": entries[p].path or entries[p].name, "error": row["error"]}
            for row in self.rows
            if "error" in row
            for p in (row["position"],)
        ]
        if unreadable:
            folder.write_csv("unreadable.csv", unreadable)
        report = markdown_report(self.job, result, summary, list(figures), unreadable)
        folder.write_text("report.md", report)


# --------------------------------------------------------------------------- helpers


def _settings(
    args: argparse.Namespace, previous: dict[str, Any] | None, parse_methods: Any
) -> Settings:
    """The run's settings: the options given, the resumed run's for the others, else the
    defaults. A given option that differs from the resumed run's is refused."""
    given: dict[str, Any] = {}
    if args.images:
        given["data"] = [_data_argument(a) for a in args.images]
    if args.model is not None:
        given["model"] = args.model
    if args.weights is not None:
        given["weights"] = str(Path(args.weights).resolve())
    if args.layer is not None:
        given["layer"] = args.layer
    if args.methods is not None:
        given["methods"] = parse_methods(args.methods)
    for key in ("threshold", "batch_size", "limit", "seed"):
        if getattr(args, key) is not None:
            given[key] = getattr(args, key)
    if args.skip_unmatched:
        given["skip_unmatched"] = True
    output = Path(args.output)
    for key, value in given.items():
        _check_unchanged(previous, key, value, output)
    defaults = asdict(Settings(methods=parse_methods(None)))
    return Settings(**{**defaults, **(previous or {}), **given})


def _check_unchanged(previous: dict[str, Any] | None, key: str, value: Any, output: Path) -> None:
    if previous is not None and previous.get(key) != value:
        raise RunFolderError(
            f"cannot resume the run in {output} with {FLAGS[key]} {_shown(value)}: it was "
            f"started with {_shown(previous.get(key))}; leave the option out to keep the run's "
            "value, or start a new run in another folder (-o)"
        )


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return str(value)


def _previous_settings(output: Path) -> dict[str, Any]:
    manifest = read_manifest(output) if output.is_dir() else None
    if manifest is None:
        raise RunFolderError(f"nothing to resume in {output}: it holds no camplus run")
    if manifest["command"] != "compare":
        raise RunFolderError(f"{output} holds a camplus {manifest['command']} run, not compare")
    return dict(manifest["settings"])


def _data_argument(argument: str) -> str:
    """A path as an absolute path (so a resumed run finds it from anywhere); a name as is."""
    path = Path(argument)
    return str(path.resolve()) if path.exists() else argument


def _listing_csv(entries: Sequence[ImageEntry], listing: Listing) -> str:
    rows = [
        {
            "position": position,
            "image": entry.name,
            "path": _relative(entry.path, listing.root),
            "label": "" if entry.label is None else entry.label,
        }
        for position, entry in enumerate(entries)
    ]
    return csv_text(rows)


def _relative(path: str | None, root: Path | None) -> str:
    if path is None:
        return ""
    if root is None:
        return path
    return Path(path).relative_to(root).as_posix()


def _check_same_data(listing_file: Path, listing: str, output: Path) -> None:
    """Refuse to resume on data that changed since the run started."""
    before = listing_file.read_text() if listing_file.exists() else ""
    if before == listing:
        return
    old, new = before.splitlines(), listing.splitlines()
    pairs = enumerate(zip(old, new, strict=False))
    first = next((i for i, (a, b) in pairs if a != b), min(len(old), len(new)))
    raise RunFolderError(
        f"cannot resume the run in {output}: the data changed since it started ({len(old) - 1} "
        f"images then, {len(new) - 1} now; first difference at line {first + 1} of dataset.csv: "
        f"{(old[first : first + 1] or ['(nothing)'])[0]!r} then, "
        f"{(new[first : first + 1] or ['(nothing)'])[0]!r} now)"
    )


def _records(output: Path, batches: int) -> Iterator[dict[str, Any]]:
    """The part files' batch records, each batch once."""
    seen: set[int] = set()
    for record in read_part_records(output):
        number = record.get("batch")
        if not isinstance(number, int) or not 0 <= number < batches:
            raise RunFolderError(f"a part file in {output} holds an unknown batch {number!r}")
        if number in seen:
            raise RunFolderError(
                f"batch {number} appears twice in the part files of {output}: two runs wrote "
                "into the folder; start a new run in another folder"
            )
        seen.add(number)
        yield record


def _nested(per_method: dict[str, dict[str, Tensor]], k: int) -> dict[str, dict[str, float]]:
    return {s: {m: float(v[k]) for m, v in by.items()} for s, by in per_method.items()}


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    unreadable = sum("error" in row for row in rows)
    kept = sum(bool(row.get("kept")) for row in rows)
    return {
        "images": len(rows),
        "unreadable": unreadable,
        "below threshold": len(rows) - unreadable - kept,
        "scored": kept,
    }


def _summary_line(counts: dict[str, int], scored_now: int, elapsed: float, world: int) -> str:
    parts = [f"{counts['scored']} of {counts['images']} images scored"]
    if counts["below threshold"]:
        parts.append(f"{counts['below threshold']} below the threshold")
    if counts["unreadable"]:
        parts.append(f"{counts['unreadable']} unreadable (see unreadable.csv)")
    if not scored_now:
        return "; ".join(parts) + "; nothing was left to score"
    processes = f" on {world} processes" if world > 1 else ""
    rate = scored_now / elapsed if elapsed > 0 else math.inf
    timing = f"{scored_now} images in {elapsed:.1f} s ({rate:.2f} images/s{processes})"
    return "; ".join(parts) + f"; this attempt: {timing}"


__all__ = ["CompareJob", "Processes", "Settings", "run_compare"]
