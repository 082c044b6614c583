"""What produced a run: software versions, the commit, the machine's settings and the command line.

:func:`collect` is called when a run starts and :meth:`Provenance.finish` when it ends; the
result goes into ``manifest.json`` (:meth:`Provenance.to_json`) and ``report.md``
(:meth:`Provenance.markdown_rows`). The git commit is read only when this package runs from a
git checkout, with ``git`` if it is installed; anything that cannot be read is recorded as
``None`` rather than guessed.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

#: The distributions whose versions decide the results.
PACKAGES = ("captum-camplus", "torch", "captum", "timm", "quantus", "numpy")
#: Seconds ``git`` may take to answer.
GIT_TIMEOUT = 10


@dataclass
class Provenance:
    """A run's provenance (times in ISO 8601, UTC)."""

    versions: dict[str, str | None]  #: distribution -> version (None: not installed)
    python: str
    platform: str
    commit: str | None  #: the checkout's commit (None: not run from a git checkout)
    dirty: bool | None  #: uncommitted changes in the checkout
    device: str
    threads: int  #: torch's intra-op threads per process
    processes: int  #: processes of the run (torchrun's world size)
    seed: int | None
    command: list[str]  #: the full command line
    started: str
    finished: str | None = None

    def finish(self) -> None:
        """Record the end time."""
        self.finished = now()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def markdown_rows(self) -> list[tuple[str, str]]:
        """``(what, value)`` rows for the report's table."""
        commit = "not a git checkout" if self.commit is None else self.commit
        if self.dirty:
            commit += " (with uncommitted changes)"
        versions = ", ".join(
            f"{name} {'not installed' if version is None else version}"
            for name, version in self.versions.items()
        )
        return [
            ("software", versions),
            ("python", f"{self.python} on {self.platform}"),
            ("commit", commit),
            ("device", self.device),
            ("threads per process", str(self.threads)),
            ("processes", str(self.processes)),
            ("seed", "none" if self.seed is None else str(self.seed)),
            ("command", f"`{' '.join(self.command)}`"),
            ("started (UTC)", self.started),
            ("finished (UTC)", self.finished or "not finished"),
        ]


def collect(
    device: torch.device | str,
    *,
    processes: int = 1,
    seed: int | None = None,
    command: Sequence[str] | None = None,
) -> Provenance:
    """The provenance of a run starting now in this process."""
    commit, dirty = git_state(Path(__file__).resolve().parent.parent)
    return Provenance(
        versions={name: version(name) for name in PACKAGES},
        python=platform.python_version(),
        platform=platform.platform(),
        commit=commit,
        dirty=dirty,
        device=str(device),
        threads=torch.get_num_threads(),
        processes=processes,
        seed=seed,
        command=list(sys.argv if command is None else command),
        started=now(),
    )


def version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def git_state(folder: Path) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout holding ``folder``; ``(None, None)`` when it is
    not in one or ``git`` is missing or fails."""
    if not (folder / ".git").exists():  # an installed package: no checkout to describe
        return None, None
    try:
        commit = _git(folder, "rev-parse", "HEAD")
        status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, bool(status)


def _git(folder: Path, *arguments: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(folder), *arguments],
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT,
        check=True,
    )
    return done.stdout.strip()


def now() -> str:
    """The time now, ISO 8601 in UTC to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


__all__ = ["PACKAGES", "Provenance", "collect", "git_state", "now", "version"]
