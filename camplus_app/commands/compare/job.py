"""A prepared ``camplus compare`` run: check the input and load everything on every process,
take the output folder (rank 0), score this process's batches, merge the part files (rank 0)."""

from __future__ import annotations

import argparse
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from camplus_app import zoo
from camplus_app.datasets import ImageEntry, Listing, find_images, select
from camplus_app.options import (
    PROG,
    Interrupted,
    UsageError,
    output_path,
    parse_device,
    parse_methods,
    write,
)
from camplus_app.provenance import Provenance, collect
from camplus_app.report import RunFacts
from camplus_app.runs import RunFolder, RunFolderError, open_run, part_name, read_parts

from .outputs import NothingReadable, Outputs, counts, summary_line
from .processes import Processes
from .scoring import Shard, score_shard
from .settings import (
    Settings,
    batch_positions,
    batch_records,
    check_same_data,
    check_same_settings,
    check_unchanged,
    listing_csv,
    previous_settings,
    settings_from,
)


def run(args: argparse.Namespace) -> None:
    """``camplus compare`` from parsed arguments, on this process (one of several under
    ``torchrun``). Failures raise (:class:`UsageError` for bad input); Ctrl-C raises
    :class:`Interrupted` with how to go on."""
    processes = Processes.from_environment()
    job: CompareJob | None = None
    try:
        job = CompareJob.prepare(args, processes)
        job.run()
    except KeyboardInterrupt as stop:
        processes.started = False  # the others are stopping too: no goodbye collective
        message = job.interrupted_message() if job is not None else "interrupted"
        raise Interrupted(message) from stop
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
        """Check the input and load everything, on every process; bad input raises UsageError."""
        error = None
        try:
            output = output_path(args.output)
            previous = previous_settings(output) if args.resume else None
            settings = settings_from(args, previous, parse_methods)
            device = processes.device(parse_device(args.device))
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
                check_unchanged(previous, "target", target, output)
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
        return batch_positions(number, self.settings.batch_size, len(self.entries))

    def run(self) -> None:
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
        if self.processes.rank == 0:
            self._finish(scored, elapsed)

    def close(self) -> None:
        if self.folder is not None:
            self.folder.close()

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
            check_same_data(self.output / "dataset.csv", listing, self.output)
        self.provenance = collect(
            self.classifier.device,
            processes=self.processes.world,
            seed=self.settings.seed,
            command=getattr(self.args, "command_line", None),
        )
        self.attempt = folder.start(
            "compare", asdict(self.settings), provenance=self.provenance.to_json()
        )
        if folder.previous is None:
            folder.write_text("dataset.csv", listing)
        done = {record["batch"] for record in batch_records(self.output, self.batches)}
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

    def interrupted_message(self) -> str:
        """What an interrupted run tells the user: how to go on, once the folder is taken."""
        if self.attempt == 0:
            return "interrupted before anything was scored"
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
            unmatched=dict(listing.unmatched),
            provenance=self.provenance,
            earlier_attempts=(
                self.folder.manifest.get("earlier attempts", []) if self.folder else []
            ),
        )

    def _finish(self, scored_now: int, elapsed: float) -> None:
        """Merge the part files into the tables, figures and report."""
        assert self.folder is not None
        records = {record["batch"]: record for record in batch_records(self.output, self.batches)}
        missing = [b for b in range(self.batches) if b not in records]
        if missing:
            raise UsageError(
                f"{len(missing)} batches were not scored (did a process fail?); "
                f"to score them, run:\n  {self.resume_command()}"
            )
        rows = [row for b in range(self.batches) for row in records[b]["images"]]
        tally = counts(rows)
        summary = {
            **tally,
            "seconds": round(elapsed, 3),
            "images per second": round(scored_now / elapsed, 4) if elapsed > 0 else None,
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
        except ValueError as error:  # no image above the threshold: a complete run, no tables
            self.folder.complete(summary)
            raise UsageError(str(error)) from error
        self.provenance.finish()  # for the report written next; the manifest gets the last
        outputs.write(result, summary, self.facts())
        self.provenance.finish()
        self.folder.complete(summary, self.provenance.to_json())
        if not self.args.quiet:
            shown = result.format(intervals=True, seed=self.settings.seed)
            write(f"{clf.name}, layer {clf.layer_name}: " + shown)
            write(summary_line(tally, scored_now, elapsed, self.processes.world))
            write(f"results in {self.output}")


__all__ = ["CompareJob", "run"]
