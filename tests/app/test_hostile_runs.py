"""Hostile use of run folders and data (round three): tampered, half-written and foreign
folders, spreadsheet formulas, undecodable names, full disks, odd files in class folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from camplus_app.datasets import Fingerprint, _class_folders, find_images
from camplus_app.parts import PartWriter, part_name, read_parts
from camplus_app.runs import (
    BACKUP,
    LOCK,
    MANIFEST,
    TEMPORARY,
    RunFolderError,
    WriteFailed,
    open_run,
    read_manifest,
)
from camplus_app.textsafe import csv_text, printable, spreadsheet_safe

UNDECODABLE = os.fsdecode(b"caf\xe9-\xff")  # Latin-1 bytes: not UTF-8


def _run_with_files(out: Path, *names: str) -> None:
    run = open_run(out, "compare")
    run.start("compare", {"x": 1})
    for name in names:
        run.write_text(name, "data")
    run.close()


def _temporaries(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob(f"{TEMPORARY}*"))


# ----------------------------------------------------------------------- temporaries


def test_user_files_named_like_old_temporaries_are_never_deleted(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run_with_files(out, "scores.csv")
    (out / ".tmp-notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match=r"did not write \(.tmp-notes.txt\)"):
        open_run(out, "compare", overwrite=True)
    assert (out / ".tmp-notes.txt").read_text() == "mine"


def test_a_failed_new_run_deletes_only_what_it_wrote(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = open_run(out, "explain")
    run.start("explain", {})
    run.write_text("a.png", "x")
    (out / ".tmp-a.png").write_text("the user's, dropped in while the run worked")
    run.discard()
    assert sorted(p.name for p in out.iterdir()) == [".tmp-a.png"]


def test_temporary_files_live_in_the_folder_the_manifest_records(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = open_run(out, "compare")
    run.start("compare", {"x": 1})
    run.write_text("scores.csv", "data")
    assert _temporaries(out) == [read_manifest(out)["temporary"]]
    run.close()
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("end", ["complete", "discard", "close"])
def test_a_run_that_ends_leaves_no_temporary_folder(tmp_path: Path, end: str) -> None:
    out = tmp_path / "out"
    run = open_run(out, "compare")
    run.start("compare", {"x": 1})
    run.write_text("scores.csv", "data")
    assert _temporaries(out)
    getattr(run, end)()
    assert _temporaries(out) == []


def test_a_killed_runs_temporary_folder_is_removed_by_the_next_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run_with_files(out, "scores.csv")
    killed = out / read_manifest(out)["temporary"]  # as a kill -9 mid-write leaves it
    killed.mkdir()
    (killed / "0123.part").write_text("half")
    resumed = open_run(out, "compare", resume=True)
    assert not killed.exists()
    resumed.start("compare", {"x": 1})
    resumed.complete()
    assert _temporaries(out) == []


def test_the_manifest_backup_is_named_as_what_it_is(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run_with_files(out, "scores.csv")
    assert BACKUP == "manifest.backup.json"
    assert (out / BACKUP).read_text() == (out / MANIFEST).read_text()
    assert sorted(p.name for p in out.iterdir()) == sorted([LOCK, MANIFEST, BACKUP, "scores.csv"])


def test_a_users_file_named_like_the_backup_is_never_taken_for_ours(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / BACKUP).write_text("mine")
    with pytest.raises(RunFolderError, match=r"did not write \(manifest.backup.json\)"):
        open_run(out, "compare")
    assert (out / BACKUP).read_text() == "mine"


def test_a_tampered_temporary_name_cannot_point_outside(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run_with_files(out, "scores.csv")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "f").write_text("keep")
    manifest = read_manifest(out)
    manifest["temporary"] = "../precious"
    (out / MANIFEST).write_text(json.dumps(manifest))
    open_run(out, "compare", overwrite=True).close()
    assert (tmp_path / "precious" / "f").read_text() == "keep"


def test_a_tampered_file_list_cannot_delete_files_outside(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run_with_files(out, "scores.csv")
    (tmp_path / "outside.txt").write_text("keep")
    manifest = read_manifest(out)
    manifest["files"].append("../outside.txt")
    for copy in (out / MANIFEST, out / BACKUP):
        copy.write_text(json.dumps(manifest))
    with pytest.raises(RunFolderError, match="a file outside its folder"):
        open_run(out, "compare", overwrite=True)
    assert (tmp_path / "outside.txt").read_text() == "keep"


# ----------------------------------------------------------------------- damaged manifests


@pytest.mark.parametrize("damage", ["", "{", "[]", '{"command": "compare"}', "\x00\x00"])
def test_a_damaged_manifest_is_recovered_from_its_copy(tmp_path: Path, damage: str) -> None:
    out = tmp_path / "out"
    _run_with_files(out, "scores.csv")
    (out / MANIFEST).write_text(damage)
    with pytest.raises(RunFolderError, match="pass --resume to continue it, --overwrite"):
        open_run(out, "compare")
    assert read_manifest(out)["files"] == ["scores.csv"]  # restored from the copy
    resumed = open_run(out, "compare", resume=True)
    assert resumed.start("compare", {"x": 1}) == 2
    resumed.close()
    (out / MANIFEST).write_text(damage)
    open_run(out, "compare", overwrite=True).close()
    assert sorted(p.name for p in out.iterdir()) == [LOCK]


def test_a_deleted_manifest_is_recovered_from_its_copy(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run_with_files(out, "scores.csv")
    (out / MANIFEST).unlink()
    resumed = open_run(out, "compare", resume=True)
    assert resumed.previous is not None and resumed.previous["files"] == ["scores.csv"]
    resumed.close()


def test_a_manifest_damaged_with_its_copy_is_refused_with_what_to_do(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run_with_files(out, "scores.csv")
    (out / MANIFEST).write_text("{")
    (out / BACKUP).write_text("{")
    with pytest.raises(RunFolderError, match="no intact copy.*move the folder aside"):
        open_run(out, "compare", overwrite=True)
    assert (out / "scores.csv").exists()


def test_a_foreign_manifest_is_not_taken_for_ours(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text('{"name": "my project"}')
    with pytest.raises(RunFolderError, match="is not a camplus manifest"):
        open_run(tmp_path, "compare", overwrite=True)
    assert json.loads((tmp_path / MANIFEST).read_text()) == {"name": "my project"}


def test_a_run_killed_before_its_first_manifest_leaves_a_folder_a_new_run_takes(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK).touch()
    (out / f"{TEMPORARY}0123abcd").mkdir()
    (out / f"{TEMPORARY}0123abcd" / "5f3a.part").write_text('{"comm')
    run = open_run(out, "compare")
    assert run.previous is None
    run.start("compare", {})
    run.close()
    assert not (out / f"{TEMPORARY}0123abcd").exists()


# ----------------------------------------------------------------------- CSV cells


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=cmd|' -C calc'!A0", "'=cmd|' -C calc'!A0"),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("-1.5", "-1.5"),
        ("-3e-07", "-3e-07"),
        (-2, -2),
        (-0.25, -0.25),
        (float("-inf"), "'-inf"),
        ("plain", "plain"),
        (None, None),
    ],
)
def test_spreadsheet_formulas_are_neutralised(cell: object, written: object) -> None:
    assert spreadsheet_safe(cell) == written


def test_csv_text_neutralises_names_and_keeps_negative_numbers() -> None:
    text = csv_text([{"image": "=HYPERLINK(1)", "log mean": -0.1355, "=head": 1}])
    assert text.splitlines() == ["image,log mean,'=head", "'=HYPERLINK(1),-0.1355,1"]


# ----------------------------------------------------------------------- undecodable names


def test_undecodable_names_are_written_as_escaped_bytes(tmp_path: Path) -> None:
    assert printable(UNDECODABLE) == "caf\\xe9-\\xff"
    assert printable("\ud800 lone") == "\\ud800 lone"  # not from a file name: still writable
    run = open_run(tmp_path / "out", "explain")
    run.start("explain", {"images": [UNDECODABLE]})
    run.write_csv("predictions.csv", [{"image": UNDECODABLE}])
    run.complete()
    assert (tmp_path / "out" / "predictions.csv").read_text() == "image\ncaf\\xe9-\\xff\n"
    assert read_manifest(tmp_path / "out")["settings"]["images"] == [UNDECODABLE]  # lossless


# ----------------------------------------------------------------------- write failures


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_names_the_file() -> None:
    writer = PartWriter(Path("/dev/full"))
    with pytest.raises(WriteFailed, match="cannot write /dev/full: No space left"):
        writer.write({"batch": 0})


def test_a_read_only_folder_names_the_file(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    run = open_run(tmp_path / "out", "compare")
    run.start("compare", {})
    (tmp_path / "out" / "parts").mkdir()
    (tmp_path / "out" / "parts").chmod(0o500)
    try:
        with pytest.raises(WriteFailed, match="cannot write .*parts"):
            PartWriter(run.file(part_name(1, 0)))
    finally:
        (tmp_path / "out" / "parts").chmod(0o700)
        run.close()


@pytest.mark.parametrize("line", ["[1, 2]", '"text"', "3", "null"])
def test_a_part_record_that_is_not_a_record_is_refused(tmp_path: Path, line: str) -> None:
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "001-rank0.jsonl").write_text(line + "\n")
    with pytest.raises(RunFolderError, match=r"001-rank0.jsonl, line 1, is damaged \(a "):
        list(read_parts(tmp_path))


# ----------------------------------------------------------------------- data


class _Classes:
    """The part of a classifier that class folders need."""

    name = "toy"
    categories = ["cat", "dog"]

    def class_index(self, name: str) -> int:
        return self.categories.index(name)


def _image(path: Path, fmt: str) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if fmt == "PPM" and path.suffix == ".pgm" else "RGB"
    Image.new(mode, (8, 8), 128 if mode == "L" else (1, 2, 3)).save(path, format=fmt)


def test_every_format_pillow_reads_is_listed_from_class_folders(tmp_path: Path) -> None:
    from camplus_app.images import read_image

    for suffix, fmt in [(".ppm", "PPM"), (".pgm", "PPM"), (".jfif", "JPEG"), (".jpe", "JPEG")]:
        _image(tmp_path / "cat" / f"a{suffix}", fmt)
    _image(tmp_path / "dog" / "b.tga", "TGA")
    listing = _class_folders(tmp_path, _Classes(), False)
    names = [e.name for e in listing.entries]  # one stem, four files: four names
    assert names == ["cat/a", "cat/a-2", "cat/a-3", "cat/a-4", "dog/b"]
    for entry in listing.entries:
        assert read_image(entry.path).size == (8, 8)
    assert listing.skipped == {}


def test_files_of_class_folders_not_read_are_listed_with_why(tmp_path: Path) -> None:
    _image(tmp_path / "cat" / "a.png", "PNG")
    (tmp_path / "cat" / "notes.txt").write_text("x")
    (tmp_path / "cat" / ".DS_Store").write_text("x")
    os.symlink("loop-b", tmp_path / "cat" / "loop-a.png")
    os.symlink("loop-a.png", tmp_path / "cat" / "loop-b")
    os.symlink("gone.png", tmp_path / "cat" / "dangling.png")
    os.symlink(tmp_path / "cat", tmp_path / "cat" / "itself")
    os.symlink(tmp_path / "cat", tmp_path / "dog")  # a link to another class folder: not read
    listing = _class_folders(tmp_path, _Classes(), False)
    assert [e.name for e in listing.entries] == ["cat/a"]
    assert listing.skipped["dog"].startswith("a symbolic link to cat (not read: its images")
    assert listing.skipped["cat/itself"] == "a symbolic link to a folder (not followed)"
    assert listing.skipped["cat/loop-a.png"] == "a symbolic link that loops"
    assert listing.skipped["cat/loop-b"] == "a symbolic link that loops"
    assert listing.skipped["cat/dangling.png"] == "a symbolic link to nothing"
    assert listing.skipped["cat/notes.txt"].startswith("not an image by its name")
    assert ".DS_Store" not in " ".join(listing.skipped)


def test_the_fingerprint_sees_bytes_replaced_under_the_same_size_and_time(tmp_path: Path):
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG" + bytes(100))
    before = Fingerprint.of(image)
    status = image.stat()
    image.write_bytes(b"\x89PNG" + bytes(99) + b"\x01")
    os.utime(image, ns=(status.st_atime_ns, status.st_mtime_ns))
    after = Fingerprint.of(image)
    assert (after.size, after.mtime_ns) == (before.size, before.mtime_ns)
    assert after.blake2b != before.blake2b


def test_an_image_named_like_a_formula_is_listed_as_it_is(tmp_path: Path) -> None:
    _image(tmp_path / "=cmd|' -C calc'!A0.png", "PNG")
    listing = find_images([str(tmp_path)], _Classes())
    assert [e.name for e in listing.entries] == ["=cmd|' -C calc'!A0"]


def test_a_part_file_with_bytes_that_are_not_utf8_is_named_damaged(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "001-rank0.jsonl").write_bytes(b'{"batch": 0}\n{"batch": "\xff"}\n')
    with pytest.raises(RunFolderError, match="001-rank0.jsonl, line 2, is damaged"):
        list(read_parts(tmp_path))
