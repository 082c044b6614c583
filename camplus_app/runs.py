"""A run's output folder: one run per folder, locked while it runs, resumable, never mixed.

A folder holds at most one run of the ``camplus`` command. Its ``manifest.json`` states the
command, the settings, the state (``running`` or ``complete``) and every file the run wrote; a
lock file is held while the run works (:mod:`camplus_app.locks`), so a second run into the same
folder stops at once instead of mixing its files with the first's. A folder is taken only if it
is new, empty, or holds a run of ours and the user says what to do with it: ``--resume``
continues it (same settings), ``--overwrite`` deletes the files it lists first. Files the run
did not write are never touched: a folder holding any refuses even ``--overwrite``.

Files are written whole through a temporary file in ``.camplus-tmp-<id>/``, a folder the run
names at random and records in its manifest (``temporary``): no user file can be there, so
``--overwrite`` and a failed run delete only what the run wrote. The folder is removed when the
run releases the output folder (complete, discarded or interrupted); only a killed run leaves
one, which the next run that takes the folder removes. Every manifest is also written to
``manifest.backup.json``, from which a damaged or deleted ``manifest.json`` is recovered.

The run's streaming results go to part files (:mod:`camplus_app.parts`); its CSV and text are
made safe by :mod:`camplus_app.textsafe`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from camplus_app.errors import Failure, UsageError
from camplus_app.locks import try_lock, unlock
from camplus_app.textsafe import csv_text, printable

MANIFEST = "manifest.json"
#: The copy of the manifest that a damaged or deleted ``manifest.json`` is recovered from.
BACKUP = "manifest.backup.json"
LOCK = ".camplus.lock"
TEMPORARY = ".camplus-tmp-"  #: prefix of the run's own folder of files being written
_TEMPORARY_NAME = re.compile(re.escape(TEMPORARY) + r"[0-9a-f]{8}")

_Result = TypeVar("_Result")


class RunFolderError(UsageError):
    """The folder cannot take this run (in use, someone else's files, nothing to resume, a
    damaged record...); the message says why and what to do."""


class WriteFailed(Failure):
    """A file of the run could not be written (a full disk, no permission...); the message
    names the file."""


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
        #: The run's own folder of files being written (recorded in the manifest), made on the
        #: first write and removed when the folder is released.
        self.temporary = path / f"{TEMPORARY}{secrets.token_hex(4)}"

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
        guarded_write(path.parent, lambda: path.parent.mkdir(parents=True, exist_ok=True))
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
        self.close()
        if self.previous is None:
            (self.path / LOCK).unlink(missing_ok=True)
            for folder in reversed(self._created):
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()

    def close(self) -> None:
        """Remove the run's temporary folder and release the lock (the manifest keeps its
        state: an unfinished run stays resumable)."""
        if self._lock is not None:
            shutil.rmtree(self.temporary, ignore_errors=True)
            unlock(self._lock)
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
        self._atomic_write(self.path / BACKUP, text)

    def _atomic_write(self, path: Path, data: bytes) -> None:
        atomic_write(path, data, self.temporary)


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
    if not try_lock(lock):
        lock.close()
        raise RunFolderError(
            f"output folder {folder} is in use by another camplus run; wait "
            "for it to end or choose another folder with -o"
        )
    try:
        previous = _inspect(folder, command, resume=resume, overwrite=overwrite, ours=ours)
    except BaseException:
        unlock(lock)
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
    return ".." not in parts and "" not in parts and parts[0] not in (LOCK, MANIFEST, BACKUP)


def _manifest_or_none(folder: Path) -> dict[str, Any] | None:
    """The manifest of ``folder``, or None if it has none or a damaged one."""
    try:
        return read_manifest(folder)
    except RunFolderError:
        return None


def _recovered_manifest(folder: Path, damage: RunFolderError) -> dict[str, Any]:
    """The manifest from its backup, for a damaged or missing ``manifest.json``."""
    try:
        manifest = _read_manifest_file(folder / BACKUP)
    except RunFolderError:
        manifest = None
    if manifest is None:
        raise RunFolderError(
            f"{damage}; it has no intact copy ({BACKUP}), so camplus cannot tell which files "
            "are its own: move the folder aside and start a new run"
        ) from damage
    return manifest


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
    if manifest is None and ours and (folder / BACKUP).exists():
        return _recovered_manifest(folder, RunFolderError(f"{folder / MANIFEST} is missing"))
    return manifest


def _inspect(
    folder: Path, command: str, *, resume: bool, overwrite: bool, ours: bool
) -> dict | None:
    """Check what the locked folder holds against what the user asked; clear it for
    ``overwrite``. Returns the previous manifest for ``resume``. ``ours``: the folder held a
    camplus lock file before (so a damaged manifest is ours, and temporary folders are left by
    a run that was killed)."""
    manifest = run_manifest(folder, ours)
    if manifest is not None and _manifest_or_none(folder) != manifest:
        _restore_manifest(folder, manifest)
    leftovers = _temporaries(folder) if ours else []
    allowed = {LOCK, MANIFEST} | set(manifest["files"] if manifest else ())
    if manifest is not None or ours:
        allowed.add(BACKUP)
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
    for leftover in leftovers:  # a killed run's half-written files
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


def _restore_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` again from its recovered copy."""
    scratch = folder / f"{TEMPORARY}{secrets.token_hex(4)}"
    try:
        atomic_write(folder / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode(), scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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
    """Delete the files a run listed, its temporary folder, its manifest and backup, and the
    sub-folders it left empty."""
    for name in manifest["files"]:
        (folder / name).unlink(missing_ok=True)
    temporary = manifest.get("temporary")
    if isinstance(temporary, str) and _TEMPORARY_NAME.fullmatch(temporary):
        shutil.rmtree(folder / temporary, ignore_errors=True)
    subfolders = [folder / n for n in {n.split("/")[0] for n in manifest["files"] if "/" in n}]
    for sub in subfolders:
        if sub.is_dir() and not any(sub.iterdir()):
            sub.rmdir()
    (folder / BACKUP).unlink(missing_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)


def atomic_write(path: Path, data: bytes, temporary: Path) -> None:
    """Write ``data`` to a new file in the run's ``temporary`` folder, then rename it into
    place (a reader sees the old file or the new one); a failure (a full disk...) raises
    :class:`WriteFailed` naming ``path``."""

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

    guarded_write(path, write)


def guarded_write(path: Path, action: Callable[[], _Result]) -> _Result:
    """``action()``, an ``OSError`` (a full disk, no permission...) raised as a
    :class:`WriteFailed` that names ``path``."""
    try:
        return action()
    except OSError as error:
        reason = error.strerror or str(error)
        raise WriteFailed(f"cannot write {path}: {reason}") from error


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


__all__ = [
    "BACKUP",
    "LOCK",
    "MANIFEST",
    "RunFolder",
    "RunFolderError",
    "TEMPORARY",
    "WriteFailed",
    "atomic_write",
    "guarded_write",
    "open_run",
    "read_manifest",
    "run_manifest",
]
