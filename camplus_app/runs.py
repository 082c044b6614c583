"""A run's output folder: one run per folder, locked while it runs, resumable, never mixed.

A folder holds at most one run of the ``camplus`` command. Its ``manifest.json`` states the
command, the settings, the state (``running`` or ``complete``) and every file the run wrote; a
lock file is held while the run works, so a second run into the same folder stops at once
instead of mixing its files with the first's. A folder is taken only if it is new, empty, or
holds a run of ours and the user says what to do with it: ``--resume`` continues it (same
settings), ``--overwrite`` deletes the files it lists first. Files the run did not write are
never touched: a folder holding any refuses even ``--overwrite``.

Streaming results go to append-only part files (``parts/<attempt>-rank<r>.jsonl``), one JSON
line per batch, flushed and synced to disk as each batch ends: a crash or ``kill -9`` loses at
most the batch being written, whose cut-off line is recognised and dropped on reading.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

MANIFEST = "manifest.json"
LOCK = ".camplus.lock"
PARTS = "parts"
_TEMPORARY = ".tmp-"  #: prefix of files being written (then renamed into place)


class RunFolderError(Exception):
    """The folder cannot take this run; the message says why and what to do."""


class RunFolder:
    """An output folder held by this process for one run; use :func:`open_run` to get one."""

    def __init__(
        self,
        path: Path,
        lock: IO[str],
        previous: dict[str, Any] | None,
        created: list[Path] | None = None,
    ) -> None:
        self.path = path
        self._lock: IO[str] | None = lock
        #: The manifest of the run found in the folder (for ``resume``), else None.
        self.previous = previous
        self.manifest: dict[str, Any] = {}
        self._created = created or []  # folders open_run made, outermost first

    def start(
        self, command: str, settings: dict[str, Any], provenance: dict[str, Any] | None = None
    ) -> int:
        """Write the manifest of this run (state ``running``) with its settings and the
        provenance of this attempt (:mod:`camplus_app.provenance`; those of earlier attempts of
        a resumed run under ``earlier attempts``); returns the attempt number (1 for a new run,
        one more on each resume)."""
        files = list(self.previous["files"]) if self.previous else []
        attempt = int(self.previous["attempts"]) + 1 if self.previous else 1
        self.manifest = {
            "command": command,
            "state": "running",
            "settings": settings,
            "attempts": attempt,
            "started": self.previous["started"] if self.previous else _now(),
            "updated": _now(),
            "files": files,
        }
        if provenance is not None:  # this attempt's; a resumed run keeps the earlier ones
            earlier = list(self.previous.get("earlier attempts", [])) if self.previous else []
            if self.previous and "provenance" in self.previous:
                earlier.append(self.previous["provenance"])
            if earlier:
                self.manifest["earlier attempts"] = earlier
            self.manifest["provenance"] = provenance
        self._save()
        return attempt

    def file(self, name: str) -> Path:
        """The path of ``name`` (relative, ``/``-separated) in the folder, recorded in the
        manifest as this run's before anything is written to it."""
        if name not in self.manifest["files"]:
            self.manifest["files"].append(name)
            self._save()
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Write a whole file atomically (a reader sees the old file or the new one)."""
        path = self.file(name)
        _atomic_write(path, data)
        return path

    def write_text(self, name: str, text: str) -> Path:
        return self.write_bytes(name, text.encode())

    def write_csv(self, name: str, rows: Sequence[dict[str, Any]]) -> Path:
        """Write rows (dicts with the same keys) as a CSV file with a header."""
        return self.write_text(name, csv_text(rows))

    def complete(
        self, summary: dict[str, Any] | None = None, provenance: dict[str, Any] | None = None
    ) -> None:
        """Mark the run complete (with an optional summary and the final provenance, its end
        time included) and release the folder."""
        self.manifest["state"] = "complete"
        if summary is not None:
            self.manifest["summary"] = summary
        if provenance is not None:
            self.manifest["provenance"] = provenance
        self._save()
        self.close()

    def discard(self) -> None:
        """Undo a new run that failed: delete its files, and the folders :func:`open_run` made
        if nothing else is in them. A resumed run is left as it is (it stays resumable)."""
        if self.previous is None:
            _remove_run(self.path, self.manifest or {"files": []})
        self.close()
        if self.previous is None:
            (self.path / LOCK).unlink(missing_ok=True)
            for folder in reversed(self._created):
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()

    def close(self) -> None:
        """Release the lock (the manifest keeps its state: an unfinished run stays resumable)."""
        if self._lock is not None:
            _unlock(self._lock)
            self._lock.close()
            self._lock = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _save(self) -> None:
        self.manifest["updated"] = _now()
        _atomic_write(self.path / MANIFEST, (json.dumps(self.manifest, indent=2) + "\n").encode())


def open_run(
    path: Path | str, command: str, *, resume: bool = False, overwrite: bool = False
) -> RunFolder:
    """Take ``path`` for a run of ``command``: create it, or lock it and check what it holds.

    Args:
        resume: Continue the run in the folder (its manifest is in ``.previous``).
        overwrite: Delete the files of the run in the folder first (only files it wrote).

    Raises:
        RunFolderError: an empty path, a file, a folder in use by another run, a folder with
            files of someone else, a folder with a run and neither ``resume`` nor ``overwrite``,
            nothing to resume.
    """
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other: choose one")
    if str(path).strip() == "":
        raise RunFolderError("the output folder is empty: give a folder name with -o/--output")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"output {folder} exists and is not a folder")
    created = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = (folder / LOCK).open("a")
    except OSError as error:
        raise RunFolderError(f"cannot create the output folder {folder}: {error}") from error
    if not _try_lock(lock):
        lock.close()
        raise RunFolderError(
            f"output folder {folder} is in use by another camplus run; wait for it to end or "
            "choose another folder with -o"
        )
    try:
        previous = _inspect(folder, command, resume=resume, overwrite=overwrite)
    except BaseException:
        _unlock(lock)
        lock.close()
        raise
    return RunFolder(folder, lock, previous, created)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of the run in ``folder``, or None if there is none."""
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RunFolderError(f"{path} is not a camplus manifest ({error})") from error
    if not isinstance(manifest, dict) or not {"command", "state", "files"} <= set(manifest):
        raise RunFolderError(f"{path} is not a camplus manifest")
    return manifest


def _inspect(folder: Path, command: str, *, resume: bool, overwrite: bool) -> dict | None:
    """Check what the locked folder holds against what the user asked; clear it for
    ``overwrite``. Returns the previous manifest for ``resume``."""
    manifest = read_manifest(folder)
    foreign = _foreign(folder, {LOCK, MANIFEST} | set(manifest["files"] if manifest else ()))
    if foreign:
        shown = ", ".join(foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        what = "camplus run" if manifest else "folder"
        raise RunFolderError(
            f"output {what} {folder} holds files camplus did not write ({shown}); camplus writes "
            "only into a new or empty folder or one of its own runs: choose another folder with -o"
        )
    if manifest is None:
        if resume:
            raise RunFolderError(f"nothing to resume in {folder}: it holds no camplus run")
        return None
    state, previous_command = manifest["state"], manifest["command"]
    if previous_command != command:
        raise RunFolderError(
            f"output folder {folder} holds a camplus {previous_command} run, not {command}: "
            "choose another folder with -o"
        )
    if resume:
        return manifest
    if overwrite:
        _remove_run(folder, manifest)
        return None
    unfinished = state != "complete"
    hint = "--resume to continue it, " if unfinished and command == "compare" else ""
    raise RunFolderError(
        f"output folder {folder} holds {'an unfinished' if unfinished else 'a complete'} camplus "
        f"{command} run: pass {hint}--overwrite to replace it, or choose another folder with -o"
    )


def _foreign(folder: Path, ours: set[str]) -> list[str]:
    """What ``folder`` holds besides ``ours`` (relative names) and temporaries. Only the top
    level and the sub-folders of ours are listed: a run never nests deeper."""
    subfolders = {name.split("/")[0] for name in ours if "/" in name}
    foreign = []
    for entry in folder.iterdir():
        if entry.name.startswith(_TEMPORARY):
            continue
        if entry.name in subfolders and entry.is_dir() and not entry.is_symlink():
            foreign += [
                f"{entry.name}/{inner.name}"
                for inner in entry.iterdir()
                if f"{entry.name}/{inner.name}" not in ours
                and not inner.name.startswith(_TEMPORARY)
            ]
        elif entry.name not in ours:
            foreign.append(entry.name + ("/" if entry.is_dir() else ""))
    return sorted(foreign)


def _remove_run(folder: Path, manifest: dict[str, Any]) -> None:
    """Delete the files a run listed, its temporaries, and the sub-folders it left empty."""
    for name in manifest["files"]:
        (folder / name).unlink(missing_ok=True)
    subfolders = [folder / n for n in {n.split("/")[0] for n in manifest["files"] if "/" in n}]
    for place in (folder, *(s for s in subfolders if s.is_dir())):
        for entry in place.iterdir():
            if entry.name.startswith(_TEMPORARY):
                entry.unlink(missing_ok=True)
    for sub in subfolders:
        if sub.is_dir() and not any(sub.iterdir()):
            sub.rmdir()
    (folder / MANIFEST).unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f"{_TEMPORARY}{path.name}")
    with temporary.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


try:  # POSIX
    import fcntl

    def _try_lock(file: IO[str]) -> bool:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(file: IO[str]) -> None:
        fcntl.flock(file.fileno(), fcntl.LOCK_UN)

except ImportError:  # Windows
    import msvcrt

    def _try_lock(file: IO[str]) -> bool:
        try:
            msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(file: IO[str]) -> None:
        msvcrt.locking(file.fileno(), msvcrt.LK_UNLCK, 1)


# --------------------------------------------------------------------------- part files


class PartWriter:
    """An append-only JSON-lines file: one record per line, on disk when :meth:`write` returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def part_name(attempt: int, rank: int) -> str:
    """The part file of one process of one attempt of a run."""
    return f"{PARTS}/{attempt:03d}-rank{rank}.jsonl"


def read_parts(folder: Path) -> Iterator[dict[str, Any]]:
    """Every complete record of every part file in ``folder``, in file order.

    A last line without its newline (a write cut off by a crash) is dropped; any other line
    that is not JSON means the file was damaged and raises :class:`RunFolderError`.
    """
    for path in sorted((folder / PARTS).glob("*.jsonl")):
        with path.open(encoding="utf-8") as file:
            for number, line in enumerate(file, start=1):
                if not line.endswith("\n"):
                    break  # a write cut off by a crash: that batch is scored again
                try:
                    yield json.loads(line)
                except ValueError as error:
                    raise RunFolderError(
                        f"{path}, line {number}, is damaged ({error}); move the folder aside "
                        "and start a new run"
                    ) from error


__all__ = [
    "LOCK",
    "MANIFEST",
    "PARTS",
    "PartWriter",
    "RunFolder",
    "RunFolderError",
    "open_run",
    "part_name",
    "read_manifest",
    "read_parts",
]


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """Rows (dicts with the same keys) as CSV text with a header line."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
