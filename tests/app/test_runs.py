"""Run folders: one run per folder, locked, never mixed; part files that survive a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from camplus_app.parts import PartWriter, part_name, read_parts
from camplus_app.runs import (
    LOCK,
    TEMPORARY,
    RunFolderError,
    open_run,
    read_manifest,
)


def _visible(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != LOCK and not p.parent.name.startswith(TEMPORARY)
    )


def test_a_new_run_records_every_file_and_completes(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    run = open_run(out, "compare")
    assert run.previous is None and run.start("compare", {"x": 1}) == 1
    run.write_text("table.csv", "a,b\n")
    with PartWriter(run.file(part_name(1, 0))) as writer:
        writer.write({"batch": 0})
    run.complete({"images": 1})
    manifest = read_manifest(out)
    assert manifest["state"] == "complete" and manifest["summary"] == {"images": 1}
    assert manifest["files"] == ["table.csv", "parts/001-rank0.jsonl"]
    assert _visible(out) == [
        "manifest.backup.json",
        "manifest.json",
        "parts/001-rank0.jsonl",
        "table.csv",
    ]
    assert not list(out.glob(f"{TEMPORARY}*"))


def test_occupied_folders_are_refused_and_overwrite_removes_only_the_runs_files(tmp_path):
    out = tmp_path / "out"
    run = open_run(out, "compare")
    run.start("compare", {})
    run.write_text("old.csv", "x")
    PartWriter(run.file(part_name(1, 0))).close()
    run.close()  # unfinished
    with pytest.raises(
        RunFolderError, match="holds an unfinished camplus compare run: pass --resume"
    ):
        open_run(out, "compare")
    with pytest.raises(RunFolderError, match="holds a camplus compare run, not explain"):
        open_run(out, "explain", overwrite=True)
    with pytest.raises(RunFolderError, match="exclude each other"):
        open_run(out, "compare", resume=True, overwrite=True)
    resumed = open_run(out, "compare", resume=True)
    assert resumed.previous is not None and resumed.start("compare", {}) == 2
    resumed.close()
    replaced = open_run(out, "compare", overwrite=True)
    assert replaced.previous is None and _visible(out) == []
    replaced.close()
    (out / "mine.txt").write_text("keep")
    (out / "sub").mkdir()
    for flags in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(
            RunFolderError, match=r"holds files camplus did not write \(mine.txt, sub/\)"
        ):
            open_run(out, "compare", **flags)
    assert (out / "mine.txt").read_text() == "keep"


def test_bad_paths(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="exists and is not a folder"):
        open_run(tmp_path / "file", "explain")
    with pytest.raises(RunFolderError, match="output folder is empty"):
        open_run("", "explain")
    with pytest.raises(RunFolderError, match="nothing to resume"):
        open_run(tmp_path / "new", "compare", resume=True)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{")
    with pytest.raises(RunFolderError, match="is not a camplus manifest"):
        open_run(tmp_path / "bad", "compare")


def test_one_run_at_a_time(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with (
        open_run(out, "explain"),
        pytest.raises(RunFolderError, match="in use by another camplus run"),
    ):
        open_run(out, "explain")
    open_run(out, "explain").close()  # released


def test_a_failed_new_run_leaves_nothing_but_a_resumed_one_stays(tmp_path: Path) -> None:
    out = tmp_path / "new" / "out"
    run = open_run(out, "explain")
    run.start("explain", {})
    run.write_text("half.png", "x")
    run.discard()
    assert not (tmp_path / "new").exists()
    run = open_run(out, "compare")
    run.start("compare", {})
    run.close()
    again = open_run(out, "compare", resume=True)
    again.start("compare", {})
    again.discard()
    assert read_manifest(out)["attempts"] == 2


def test_part_files_drop_a_cut_off_line_and_refuse_a_damaged_one(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    good = [{"batch": 0, "v": 1.5}, {"batch": 1, "v": float("-inf")}]
    text = "".join(json.dumps(r) + "\n" for r in good)
    (tmp_path / "parts" / "001-rank0.jsonl").write_text(text + '{"batch": 2, "v"')
    (tmp_path / "parts" / "002-rank0.jsonl").write_text(json.dumps({"batch": 3}) + "\n")
    assert [r["batch"] for r in read_parts(tmp_path)] == [0, 1, 3]
    (tmp_path / "parts" / "001-rank0.jsonl").write_text('{"batch": 2, "v"\n' + text)
    with pytest.raises(RunFolderError, match="line 1, is damaged"):
        list(read_parts(tmp_path))


def test_a_resumed_run_keeps_the_provenance_of_every_attempt(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = open_run(out, "compare")
    run.start("compare", {"seed": 0}, provenance={"threads": 1, "started": "a"})
    run.close()  # interrupted
    for attempt, threads in ((2, 4), (3, 2)):
        resumed = open_run(out, "compare", resume=True)
        assert resumed.start("compare", {"seed": 0}, {"threads": threads}) == attempt
        resumed.complete(provenance={"threads": threads, "finished": "z"})
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["provenance"] == {"threads": 2, "finished": "z"}
    assert [p["threads"] for p in manifest["earlier attempts"]] == [1, 4]
