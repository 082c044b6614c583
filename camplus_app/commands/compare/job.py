"""A prepared ``camplus compare`` run: check the input and load everything on every process,
take the output folder (rank 0), score this process's batches, merge the part files (rank 0)."""

from __future__ import annotations

import argparse
import shlex
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from camplus_app import zoo
from camplus_app.datasets import ImageEntry, Listing, find_images, select
from camplus_app.errors import Failure, Interrupted, PeerProcessFailed, UsageError
from camplus_app.options import (
    PROG,
    check_scores,
    output_path,
    parse_device,
    parse_methods,
    write,
)
from camplus_app.parts import part_name, read_parts
from camplus_app.provenance import Provenance, collect
from camplus_app.report import RunFacts
from camplus_app.runs import RunFolder, open_run
from camplus_app.textsafe import printable
from metrics.records import NoImageAboveThreshold
from metrics.result import undefined_metrics
from metrics.sanity import layers_above

from .data import (
    check_same_classes,
    check_same_data,
    class_mapping,
    classes_csv,
    listing_csv,
    listing_digest,
)
from .integrity import batch_records
from .outputs import NothingReadable, Outputs, counts, summary_line
from .processes import Processes
from .scoring import Shard, score_shard
from .settings import (
    Settings,
    batch_positions,
    check_metrics,
    check_same_settings,
    check_unchanged,
    previous_settings,
    settings_from,
)


def run(args: argparse.Namespace) -> None:
    """``camplus compare`` from parsed arguments, on this process (one of several under
    ``torchrun``). Failures raise (:class:`UsageError` for bad input,
    :class:`PeerProcessFailed` when another process stopped); Ctrl-C raises
    :class:`Interrupted` with how to go on."""
    processes = Processes.from_environment()
    job: CompareJob | None = None
    # torchrun stops every process with SIGTERM when one fails (killed, out of memory): the
    # first one then says how to go on, as after Ctrl-C, instead of vanishing without a word
    handler = signal.signal(signal.SIGTERM, _stopped) if processes.world > 1 else None
    try:
        job = CompareJob.prepare(args, processes)
        job.run()
    except KeyboardInterrupt as stop:
        processes.started = False  # the others are stopping too: no goodbye collective
        stopped = isinstance(stop, Stopped)
        message = job.interrupted_message(stopped) if job is not None else "interrupted"
        raise Interrupted(message) from stop
    finally:
        if job is not None:
            job.close()
        processes.stop()
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)


class Stopped(KeyboardInterrupt):
    """SIGTERM under ``torchrun``: another process failed, and torchrun stops the others."""


def _stopped(signum: int, frame: object) -> None:
    raise Stopped


@dataclass
class CompareJob:
    """A prepared ``camplus compare``: settings checked, model loaded, images listed."""

    args: argparse.Namespace
    processes: Processes
    settings: Settings
    classifier: zoo.Classifier
    listing: Listing
    entries: list[ImageEntry]  #: the images to score (after --limit), by position
    output: Path
    folder: RunFolder | None = None  #: held by rank 0
    attempt: int = 0
    plan: list[int] = field(default_factory=list)  #: the batches this attempt scores
    provenance: Provenance | None = None  #: this attempt's, kept by rank 0

    @classmethod
    def prepare(cls, args: argparse.Namespace, processes: Processes) -> CompareJob:
        """Check the input and load everything, on every process; bad input raises
        :class:`UsageError` on every process (they agree on the first one's)."""
        failure: Exception | None = None
        try:
            output = output_path(args.output)
            previous = previous_settings(output) if args.resume else None
            settings = settings_from(args, previous, parse_methods)
            check_metrics(settings)
            device = processes.device(parse_device(args.device))
        except UsageError as error:
            failure = error
        processes.start(torch.device("cpu") if failure else device)
        _agree(processes, failure)
        try:
            settings.model = settings.model or zoo.DEFAULT_MODEL
            classifier = zoo.load_classifier(settings.model, settings.weights, settings.layer)
            classifier = classifier.to(device)
            classifier.check_layer(settings.layout_spec)
            settings.layer = classifier.layer_name
            if RANDOMISATION_CHOICE in settings.metrics:
                _check_layers_above(classifier)
            check_scores(settings.scores, len(classifier.categories), classifier.name)
            if args.target is not None:
                target = classifier.class_index(args.target)
                check_unchanged(previous, "target", target, output)
                settings.target = target
            listing = find_images(
                settings.data,
                classifier,
                settings.skip_unmatched,
                settings.merge_classes,
                settings.keep_duplicates,
            )
            if listing.labelled and settings.target is not None:
                raise UsageError(
                    "--target and a data set of class folders both name the class to explain: "
                    "leave out --target to explain each image's true class"
                )
        # the zoo and the listing raise these for input the user can fix (a bad weights file,
        # an unknown class, a missing image, a library to install)
        except (ValueError, FileNotFoundError, ImportError, UsageError) as error:
            failure = error
        _agree(processes, failure)
        entries = [
            listing.entries[p] for p in select(len(listing.entries), settings.limit, settings.seed)
        ]
        return cls(args, processes, settings, classifier, listing, entries, output)

    @property
    def batches(self) -> int:
        return -(-len(self.entries) // self.settings.batch_size)

    def batch_positions(self, number: int) -> range:
        return batch_positions(number, self.settings.batch_size, len(self.entries))

    def run(self) -> None:
        """Take the folder (rank 0), score this process's batches, merge them (rank 0).

        Raises:
            UsageError: the folder or ``--resume`` is refused (on every process).
            PeerProcessFailed: another process stopped; the message says how to resume.
            Exception: this process's own failure, as it is.
        """
        failure: UsageError | None = None
        if self.processes.rank == 0:
            try:
                self._take_folder()
            except UsageError as error:
                failure = error
        _agree(self.processes, failure)
        if self.processes.rank == 0 and not self.args.quiet:
            for metric, reason in undefined_metrics(self.settings.scores).items():
                write(f"{metric}: n/a ({reason})")  # said before the work, not after it
        started = time.perf_counter()
        try:
            self.attempt, self.plan = self.processes.share((self.attempt, self.plan))
            scored = sum(self.processes.gather(self._score()))  # waits for every shard
        except PeerProcessFailed as error:
            self._discard_if_empty()
            raise PeerProcessFailed(
                f"{error}; the batches scored so far are saved in {self.output}; to go on with "
                f"the rest, run the same torchrun command with --resume:\n  "
                f"{self.resume_command()}"
            ) from error
        except Exception:
            self._discard_if_empty()
            raise
        elapsed = time.perf_counter() - started
        if self.processes.rank == 0:
            self._finish(scored, elapsed)

    def close(self) -> None:
        if self.folder is not None:
            self.folder.close()

    def _records(self) -> Iterator[dict[str, Any]]:
        return batch_records(self.output, self.settings, len(self.entries))

    def _discard_if_empty(self) -> None:
        """After a failure: a new run that scored nothing leaves nothing behind (one that
        scored some batches stays, to be resumed)."""
        if self.folder is not None and next(read_parts(self.output), None) is None:
            self.folder.discard()

    # ----------------------------------------------------------------------- rank 0: folder

    def _take_folder(self) -> None:
        """Lock the output folder, write or check the manifest and the listing, plan the
        batches still to score."""
        args = self.args
        folder = open_run(self.output, "compare", resume=args.resume, overwrite=args.overwrite)
        self.folder = folder
        if folder.previous is not None:
            check_same_settings(folder.previous["settings"], self.settings, self.output)
        listing = listing_csv(self.entries, self.listing)
        if folder.previous is not None:
            check_same_classes(folder.previous, self.listing, self.output)
            check_same_data(folder.previous, listing, self.output)
        self.provenance = collect(
            self.classifier.device,
            processes=self.processes.world,
            seed=self.settings.seed,
            command=getattr(self.args, "command_line", None),
        )
        self.attempt = folder.start(
            "compare", asdict(self.settings), provenance=self.provenance.to_json()
        )
        listing_file = self.output / "dataset.csv"
        if not listing_file.exists() or listing_file.read_text(errors="replace") != printable(
            listing
        ):
            folder.write_text("dataset.csv", listing)  # new, lost to a kill, or newer file times
        folder.record("data", listing_digest(listing))
        if self.listing.labelled:  # what each folder was read as, checked on --resume
            folder.write_text("classes.csv", classes_csv(self.listing))
            folder.record("classes", class_mapping(self.listing))
        done = {record["batch"] for record in self._records()}
        self.plan = [b for b in range(self.batches) if b not in done]
        for rank in range(self.processes.world):
            folder.file(part_name(self.attempt, rank))

    # ----------------------------------------------------------------------- every rank: score

    def _score(self) -> int:
        """Score this process's share of the planned batches; returns the images scored."""
        rank, world = self.processes.rank, self.processes.world
        where = f" (process {rank} of {world})" if world > 1 else ""
        shown = not self.args.quiet and rank == 0
        shard = Shard(
            classifier=self.classifier,
            settings=self.settings,
            entries=self.entries,
            labelled=self.listing.labelled,
            batches=self.plan[rank::world],
            part=self.output / part_name(self.attempt, rank),
            workers=self.args.workers,
            progress="scoring" + where if shown else None,
        )
        return score_shard(shard)

    def interrupted_message(self, stopped: bool = False) -> str:
        """What an interrupted run tells the user: how to go on, once the folder is taken;
        ``stopped``: by torchrun, after another process failed."""
        if self.attempt == 0:
            return "interrupted before anything was scored"
        if stopped:
            return (
                f"{PROG}: stopped: a process of this torchrun run failed (killed, out of memory?) "
                f"and torchrun stopped the others; the batches scored so far are saved in "
                f"{self.output}; to go on with the rest, run the same torchrun command with "
                f"--resume, or on one process:\n  {self.resume_command()}"
            )
        return (
            f"interrupted: the batches scored so far are saved in {self.output}; to go on "
            f"with the rest, run:\n  {self.resume_command()}"
        )

    def resume_command(self) -> str:
        words = [PROG, "compare", *self.settings.data, "-o", str(self.output), "--resume"]
        return " ".join(shlex.quote(w) for w in words)

    # ----------------------------------------------------------------------- rank 0: merge

    def facts(self) -> RunFacts:
        """What the report says about the run besides its results."""
        settings, listing, clf = self.settings, self.listing, self.classifier
        return RunFacts(
            data=list(settings.data),
            model=clf.name,
            layer=clf.layer_name,
            methods=list(settings.methods),
            threshold=settings.threshold,
            batch_size=settings.batch_size,
            images=len(self.entries),
            listed=len(listing.entries),
            classes=len(listing.classes) if listing.labelled else None,
            target=settings.target,
            target_name=None if settings.target is None else clf.categories[settings.target],
            limit=settings.limit,
            seed=settings.seed,
            scores=settings.scores,
            metrics=list(settings.metrics),
            layout=settings.layout,
            unmatched=dict(listing.unmatched),
            skipped=dict(listing.skipped),
            listing=listing if listing.labelled else None,
            provenance=self.provenance,
            earlier_attempts=(
                self.folder.manifest.get("earlier attempts", []) if self.folder else []
            ),
        )

    def _finish(self, scored_now: int, elapsed: float) -> None:
        """Merge the part files into the tables, figures and report."""
        assert self.folder is not None
        records = {record["batch"]: record for record in self._records()}
        missing = [b for b in range(self.batches) if b not in records]
        if missing:
            raise Failure(
                f"{len(missing)} batches were not scored (did a process fail?); "
                f"to score them, run:\n  {self.resume_command()}"
            )
        rows = [row for b in range(self.batches) for row in records[b]["images"]]
        tally = counts(rows)
        seconds = sum(float(record.get("seconds", 0)) for record in records.values())
        summary = {  # the time of every attempt, from the batches' records
            **tally,
            "seconds": round(seconds, 3),
            "images per second": round(len(rows) / seconds, 4) if seconds > 0 else None,
            "processes": self.processes.world,
        }
        clf = self.classifier
        outputs = Outputs(
            self.folder,
            self.settings,
            self.entries,
            clf.categories,
            rows,
            records.values(),
            classifier=clf,
        )
        assert self.provenance is not None
        try:
            result = outputs.result()
        except NothingReadable as error:  # nothing worth keeping: a new run leaves nothing
            self.folder.discard()
            raise UsageError(str(error)) from error
        except NoImageAboveThreshold as error:  # a complete run, with no tables
            self.folder.complete(summary)
            raise UsageError(str(error)) from error
        tables = result.tables(seed=self.settings.seed)  # once, for the files and the text
        self.provenance.finish()  # for the report written next; the manifest gets the last
        outputs.write(result, tables, summary, self.facts())
        self.provenance.finish()
        self.folder.complete(summary, self.provenance.to_json())
        if not self.args.quiet:
            shown = result.format(tables=tables)
            write(f"{clf.name}, layer {clf.layer_name}: " + shown)
            write(summary_line(tally, scored_now, elapsed, self.processes.world))
            if self.listing.skipped:
                write(
                    f"{len(self.listing.skipped)} files of the class folders were not read "
                    "(listed in report.md)"
                )
            write(f"results in {self.output}")


#: The ``--metrics`` name of the check that needs layers above the CAM layer.
RANDOMISATION_CHOICE = "randomisation"


def _check_layers_above(classifier: zoo.Classifier) -> None:
    """Refuse ``--metrics randomisation`` before anything runs when no layer with parameters
    follows the CAM layer (nothing to re-initialise)."""
    try:
        layers_above(classifier.model, classifier.layer)
    except ValueError as error:
        raise UsageError(
            f"--metrics {RANDOMISATION_CHOICE}: {error}; choose an earlier --layer"
        ) from error


def _agree(processes: Processes, failure: Exception | None) -> None:
    """Raise the first process's usage error on every process (this process's own error as
    the cause, for its traceback), or nothing if every process went well."""
    message = processes.agree(None if failure is None else str(failure))
    if message is not None:
        raise UsageError(message) from failure


__all__ = ["CompareJob", "run"]
