"""A run's output folder: one run per folder, locked while it runs, resumable, never mixed.

A folder holds at most one run of the ``camplus`` command. Its ``manifest.json`` states the
command, the settings, the state (``running`` or ``complete``) and every file the run wrote; a
lock file is held while the run works, so a second run into the same folder stops at once
instead of mixing its files with the first's. A folder is taken only if it is new, empty, or
holds a run of ours and the user says what to do with it: ``--resume`` continues it (same
settings), ``--overwrite`` deletes the files it lists first. Files the run did not write are
never touched: a folder holding any refuses even ``--overwrite``.

Files are written whole through a temporary file in ``.camplus-tmp-<run id>/``, a folder the
run names at random and records in its manifest (``temporary``): no user file can be there, so
``--overwrite`` and a failed run delete only what the run wrote. The manifest is also kept in
that folder, so a damaged ``manifest.json`` is recovered from the copy.

CSV cells that a spreadsheet would read as a formula (starting with ``=``, ``+``, ``-``, ``@``,
a tab or a carriage return) get a leading single quote, as OWASP recommends (negative numbers
stay numbers). Text that holds file names which are not valid UTF-8 (Python keeps their bytes
as lone surrogates) is written with each such byte as ``\\xHH``, in CSV, Markdown and printed
messages; JSON keeps them as ``\\udcHH`` escapes, which read back to the same name.

Streaming results go to append-only part files (``parts/<attempt>-rank<r>.jsonl``), one JSON
line per batch, flushed and synced to disk as each batch ends: a crash or ``kill -9`` loses at
most the batch being written, whose cut-off line is recognised and dropped on reading.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

MANIFEST = "manifest.json"
LOCK = ".camplus.lock"
PARTS = "parts"
TEMPORARY = ".camplus-tmp-"  #: prefix of the run's own folder of files being written
_TEMPORARY_NAME = re.compile(re.escape(TEMPORARY) + r"[0-9a-f]{8}")


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
        recorded = previous.get("temporary") if previous else None
        if not (isinstance(recorded, str) and _TEMPORARY_NAME.fullmatch(recorded)):
            recorded = f"{TEMPORARY}{secrets.token_hex(4)}"
        #: The run's own folder of files being written (recorded in the manifest).
        self.temporary = path / recorded

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
            **(self.previous or {}),  # what the run recorded (:meth:`record`) stays
            "command": command,
            "state": "running",
            "settings": settings,
            "attempts": attempt,
            "started": self.previous["started"] if self.previous else _now(),
            "updated": _now(),
            "temporary": self.temporary.name,
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
        _guarded(path.parent, lambda: path.parent.mkdir(parents=True, exist_ok=True))
        return path

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Write a whole file atomically (a reader sees the old file or the new one)."""
        path = self.file(name)
        self._atomic_write(path, data)
        return path

    def write_text(self, name: str, text: str) -> Path:
        """Write text as UTF-8, undecodable file-name bytes as ``\\xHH`` (:func:`printable`)."""
        return self.write_bytes(name, printable(text).encode())

    def write_csv(self, name: str, rows: Sequence[dict[str, Any]]) -> Path:
        """Write rows (dicts with the same keys) as a CSV file with a header (:func:`csv_text`)."""
        return self.write_text(name, csv_text(rows))

    def record(self, key: str, value: Any) -> None:
        """Record ``value`` under ``key`` in the manifest (for what the run must find again
        on resume, such as the digest of its data listing)."""
        self.manifest[key] = value
        self._save()

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
            _remove_run(self.path, self.manifest or {"files": [], "temporary": None})
            shutil.rmtree(self.temporary, ignore_errors=True)
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
        text = (json.dumps(self.manifest, indent=2) + "\n").encode()
        self._atomic_write(self.path / MANIFEST, text)
        self._atomic_write(self.temporary / MANIFEST, text)  # the copy a damaged one comes from

    def _atomic_write(self, path: Path, data: bytes) -> None:
        _atomic_write(path, data, self.temporary)


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
            nothing to resume, a damaged manifest without its copy.
    """
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other: choose one")
    if str(path).strip() == "":
        raise RunFolderError("the output folder is empty: give a folder name with -o/--output")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"output {folder} exists and is not a folder")
    created = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    ours = (folder / LOCK).exists()  # a folder a camplus run has taken before
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = (folder / LOCK).open("a")
    except OSError as error:
        raise RunFolderError(f"cannot create the output folder {folder}: {error}") from error
    if not _try_lock(lock):
        lock.close()
        raise RunFolderError(
            f"output folder {folder} is in use by another camplus run; wait "
            "for it to end or choose another folder with -o"
        )
    try:
        previous = _inspect(folder, command, resume=resume, overwrite=overwrite, ours=ours)
    except BaseException:
        _unlock(lock)
        lock.close()
        raise
    return RunFolder(folder, lock, previous, created)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of the run in ``folder``, or None if there is none.

    Raises:
        RunFolderError: ``manifest.json`` is not a camplus manifest (damaged, or not ours).
    """
    return _read_manifest_file(folder / MANIFEST)


def _read_manifest_file(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RunFolderError(f"{path} is not a camplus manifest ({error})") from error
    shapes = {"command": str, "state": str, "files": list, "settings": dict, "attempts": int}
    wrong = [
        key
        for key, kind in shapes.items()
        if not isinstance(manifest, dict) or not isinstance(manifest.get(key), kind)
    ]
    if wrong or not all(_inside(name) for name in manifest["files"]):
        what = f"no valid {', '.join(wrong)}" if wrong else "a file outside its folder"
        raise RunFolderError(f"{path} is not a camplus manifest ({what})")
    return manifest


def _inside(name: object) -> bool:
    """A file name a run may list: relative, inside the folder (a tampered manifest must not
    make ``--overwrite`` delete files elsewhere)."""
    if not isinstance(name, str) or not name or name.startswith("/"):
        return False
    parts = name.split("/")
    return ".." not in parts and "" not in parts and parts[0] not in (LOCK, MANIFEST)


def _manifest_or_none(folder: Path) -> dict[str, Any] | None:
    """The manifest of ``folder``, or None if it has none or a damaged one."""
    try:
        return read_manifest(folder)
    except RunFolderError:
        return None


def _recovered_manifest(folder: Path, damage: RunFolderError) -> dict[str, Any]:
    """The copy of a damaged manifest kept in the run's temporary folder."""
    copies = []
    for copy in sorted(folder.glob(f"{TEMPORARY}*/{MANIFEST}")):
        try:
            manifest = _read_manifest_file(copy)
        except RunFolderError:
            continue
        if manifest is not None and manifest.get("temporary") == copy.parent.name:
            copies.append(manifest)
    if len(copies) != 1:
        raise RunFolderError(
            f"{damage}; it has no intact copy, so camplus cannot tell which files are its own: "
            "move the folder aside and start a new run"
        ) from damage
    return copies[0]


def run_manifest(folder: Path, ours: bool | None = None) -> dict[str, Any] | None:
    """The manifest of the run in ``folder`` (None if there is none), recovered from its copy
    if ``manifest.json`` is damaged or missing in a folder camplus has taken (``ours``: it
    holds the lock file; found out if None).

    Raises:
        RunFolderError: a manifest that is not ours, or damaged without an intact copy.
    """
    ours = (folder / LOCK).exists() if ours is None else ours
    try:
        manifest = read_manifest(folder)
    except RunFolderError as damage:
        if not ours:
            raise
        return _recovered_manifest(folder, damage)
    if manifest is None and ours and any(folder.glob(f"{TEMPORARY}*/{MANIFEST}")):
        return _recovered_manifest(folder, RunFolderError(f"{folder / MANIFEST} is missing"))
    return manifest


def _inspect(
    folder: Path, command: str, *, resume: bool, overwrite: bool, ours: bool
) -> dict | None:
    """Check what the locked folder holds against what the user asked; clear it for
    ``overwrite``. Returns the previous manifest for ``resume``. ``ours``: the folder held a
    camplus lock file before (so a damaged manifest is ours, and temporary folders without a
    manifest are left by a run killed before it wrote one)."""
    manifest = run_manifest(folder, ours)
    if manifest is not None and _manifest_or_none(folder) != manifest:  # restore it
        text = (json.dumps(manifest, indent=2) + "\n").encode()
        _atomic_write(folder / MANIFEST, text, folder / manifest["temporary"])
    leftovers = [] if manifest is not None or not ours else _temporaries(folder)
    allowed = {LOCK, MANIFEST} | set(manifest["files"] if manifest else ())
    if manifest and isinstance(manifest.get("temporary"), str):
        allowed.add(manifest["temporary"])
    foreign = _foreign(folder, allowed | {p.name for p in leftovers})
    if foreign:
        shown = ", ".join(foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        what = "camplus run" if manifest else "folder"
        raise RunFolderError(
            f"output {what} {folder} holds files camplus did not write "
            f"({shown}); camplus writes only into a new or empty folder or one of its "
            "own runs: choose another folder with -o"
        )
    for leftover in leftovers:  # a run killed before its first manifest
        shutil.rmtree(leftover, ignore_errors=True)
    if manifest is None:
        if resume:
            raise RunFolderError(f"nothing to resume in {folder}: it holds no camplus run")
        return None
    state, previous_command = manifest["state"], manifest["command"]
    if previous_command != command:
        raise RunFolderError(
            f"output folder {folder} holds a camplus {previous_command} run, "
            f"not {command}: choose another folder with -o"
        )
    if resume:
        return manifest
    if overwrite:
        _remove_run(folder, manifest)
        return None
    unfinished = state != "complete"
    hint = "--resume to continue it, " if unfinished and command == "compare" else ""
    raise RunFolderError(
        f"output folder {folder} holds "
        f"{'an unfinished' if unfinished else 'a complete'} camplus {command} run: pass "
        f"{hint}--overwrite to replace it, or choose another folder with -o"
    )


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if _TEMPORARY_NAME.fullmatch(p.name) and p.is_dir()]


def _foreign(folder: Path, ours: set[str]) -> list[str]:
    """What ``folder`` holds besides ``ours`` (relative names). Only the top level and the
    sub-folders of ours are listed: a run never nests deeper."""
    subfolders = {name.split("/")[0] for name in ours if "/" in name}
    foreign = []
    for entry in folder.iterdir():
        if entry.name in subfolders and entry.is_dir() and not entry.is_symlink():
            foreign += [
                f"{entry.name}/{inner.name}"
                for inner in entry.iterdir()
                if f"{entry.name}/{inner.name}" not in ours
            ]
        elif entry.name not in ours:
            foreign.append(entry.name + ("/" if entry.is_dir() else ""))
    return sorted(foreign)


def _remove_run(folder: Path, manifest: dict[str, Any]) -> None:
    """Delete the files a run listed, its temporary folder, and the sub-folders it left empty."""
    for name in manifest["files"]:
        (folder / name).unlink(missing_ok=True)
    temporary = manifest.get("temporary")
    if isinstance(temporary, str) and _TEMPORARY_NAME.fullmatch(temporary):
        shutil.rmtree(folder / temporary, ignore_errors=True)
    subfolders = [folder / n for n in {n.split("/")[0] for n in manifest["files"] if "/" in n}]
    for sub in subfolders:
        if sub.is_dir() and not any(sub.iterdir()):
            sub.rmdir()
    (folder / MANIFEST).unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes, temporary: Path) -> None:
    """Write ``data`` to a new file in the run's ``temporary`` folder, then rename it into
    place; a failure (a full disk...) raises :class:`RunFolderError` naming ``path``."""

    def write() -> None:
        temporary.mkdir(exist_ok=True)
        part = temporary / f"{secrets.token_hex(8)}.part"
        try:
            with part.open("wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(part, path)
        finally:
            part.unlink(missing_ok=True)

    _guarded(path, write)


def _guarded(path: Path, action: Any) -> Any:
    """``action()``, an ``OSError`` (a full disk, no permission...) raised as a
    :class:`RunFolderError` that names ``path``."""
    try:
        return action()
    except OSError as error:
        reason = error.strerror or str(error)
        raise RunFolderError(f"cannot write {path}: {reason}") from error


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
        self._file = _guarded(path, lambda: path.open("a", encoding="utf-8"))

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"

        def append() -> None:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())

        _guarded(self.path, append)

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
    """Every complete record of every part file in ``folder``, in file order
    (:func:`read_located_parts` without the places)."""
    for _, record in read_located_parts(folder):
        yield record


def read_located_parts(folder: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every complete record of every part file in ``folder``, in file order, with where it is
    (``"<folder>/parts/001-rank0.jsonl, line 3"``, for messages).

    A last line without its newline (a write cut off by a crash) is dropped; any other line
    that is not a JSON object means the file was damaged and raises :class:`RunFolderError`.
    """
    for path in sorted((folder / PARTS).glob("*.jsonl")):
        with path.open("rb") as file:  # bytes: a line that is not UTF-8 is damaged, not fatal
            for number, line in enumerate(file, start=1):
                if not line.endswith(b"\n"):
                    break  # a write cut off by a crash: that batch is scored again
                try:
                    record = json.loads(line)
                except ValueError as error:
                    raise RunFolderError(
                        f"{path}, line {number}, is damaged ({error}); move the folder aside "
                        "and start a new run"
                    ) from error
                if not isinstance(record, dict):
                    raise RunFolderError(
                        f"{path}, line {number}, is damaged (a {type(record).__name__}, not a "
                        "record); move the folder aside and start a new run"
                    )
                yield f"{path}, line {number}", record


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """Rows (dicts with the same keys) as CSV text with a header line, every cell
    :func:`spreadsheet_safe`."""
    buffer = io.StringIO()
    fields = list(rows[0]) if rows else []
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([spreadsheet_safe(name) for name in fields])
    writer.writerows([spreadsheet_safe(row[name]) for name in fields] for row in rows)
    return buffer.getvalue()


#: What a spreadsheet reads as the start of a formula (OWASP, "CSV Injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell that no spreadsheet runs as a formula: text starting with ``=``, ``+``, ``-``,
    ``@``, a tab or a carriage return gets a leading single quote, as OWASP recommends;
    numbers, negative ones included, stay numbers; undecodable file-name bytes become
    ``\\xHH`` (:func:`printable`)."""
    if value is None or isinstance(value, bool):
        return value
    text = printable(str(value))
    if text.startswith(_FORMULA_START) and not _NUMBER.fullmatch(text):
        return "'" + text
    return value if isinstance(value, (int, float)) else text


def printable(text: str) -> str:
    """``text`` with the bytes of an undecodable file name (kept by Python as lone surrogates,
    ``os.fsdecode``) written as ``\\xHH``: lossless, and valid UTF-8 to write or print."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that are not escaped bytes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


__all__ = [
    "LOCK",
    "MANIFEST",
    "PARTS",
    "PartWriter",
    "RunFolder",
    "RunFolderError",
    "TEMPORARY",
    "csv_text",
    "open_run",
    "part_name",
    "printable",
    "read_manifest",
    "read_located_parts",
    "read_parts",
    "run_manifest",
    "spreadsheet_safe",
]
