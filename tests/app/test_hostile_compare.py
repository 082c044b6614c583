"""Hostile use of ``camplus compare`` runs (round three): data changed under a run, tampered
manifests and part files, early kills, formula and undecodable file names, odd files in class
folders, a torchrun process that dies.

A tiny random-init timm model with 1000 classes stands in for the bundled EfficientNet; the
data are crops of the bundled photographs written by ``benchmarks.make_dataset``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import torch

timm = pytest.importorskip("timm")
pytest.importorskip("skimage")
pytest.importorskip("matplotlib")
pytest.importorskip("quantus")
from benchmarks.make_dataset import write_dataset  # noqa: E402
from camplus_app import cli, errors, zoo  # noqa: E402
from camplus_app.commands.compare import job as compare_job  # noqa: E402
from camplus_app.commands.compare import processes as processes_module  # noqa: E402
from camplus_app.commands.compare.processes import (  # noqa: E402
    TIMEOUT,
    TIMEOUT_VARIABLE,
    Processes,
    process_timeout,
)
from camplus_app.errors import PeerProcessFailed  # noqa: E402
from camplus_app.runs import MANIFEST, TEMPORARY, read_manifest  # noqa: E402

ARCH = "test_efficientnet"
FOLDERS = {"coffee": "n01440764", "chelsea": "goldfish", "camera": "2"}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = timm.create_model(ARCH, num_classes=1000)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "classes"
    write_dataset(root, 6, FOLDERS, seed=1, size=48)
    return root


@pytest.fixture(scope="module")
def finished(tmp_path_factory, weights) -> Path:
    """A complete run on a data set nobody changes; tests take a copy of its folder."""
    root = tmp_path_factory.mktemp("finished")
    write_dataset(root / "classes", 6, FOLDERS, seed=1, size=48)
    assert cli.main(_argv(root / "classes", root / "out", weights)) == 0
    return root / "out"


def _copy(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(finished, out, symlinks=True)
    return out


def _argv(data: Path, out: Path, weights: Path, *extra: str, quiet: bool = True) -> list[str]:
    model = ["--model", ARCH, "--weights", str(weights), "--batch-size", "2", "--workers", "0"]
    methods = ["--methods", "gradcam,hirescam"]
    return ["compare", str(data), "-o", str(out), *(["-q"] * quiet), *methods, *model, *extra]


def _resume(out: Path) -> list[str]:
    return ["compare", "-o", str(out), "--resume", "-q", "--workers", "0"]


def _fails(
    argv: list[str], capsys, *messages: str, lines: int = 1, status: int = errors.USAGE_ERROR
) -> str:
    assert cli.main(argv) == status
    err = capsys.readouterr().err
    assert err.count("\n") == lines and err.startswith("camplus: error: "), err
    for message in messages:
        assert message in err, err
    return err


def _drop_batches(out: Path, keep: int) -> None:
    """As if the run had been killed after ``keep`` batches: its state running again."""
    first, *later = sorted((out / "parts").glob("*.jsonl"))
    lines = [line for part in (first, *later) for line in part.read_text().splitlines(True)]
    first.write_text("".join(lines[:keep]))
    for part in later:
        part.unlink()
    manifest = read_manifest(out)
    manifest["state"] = "running"
    (out / MANIFEST).write_text(json.dumps(manifest))


def test_bytes_replaced_under_the_same_name_and_time_are_refused(
    tmp_path, dataset, weights, capsys
):
    out = tmp_path / "out"
    assert cli.main(_argv(dataset, out, weights)) == 0
    _drop_batches(out, 1)
    image = sorted((dataset / "goldfish").glob("*.jpg"))[-1]  # in a batch left to score
    status = image.stat()
    # another picture (not a copy of one in another class, which the listing refuses)
    other = sorted((dataset / "n01440764").glob("*.jpg"))[0].read_bytes() + b"\x00"
    image.write_bytes(other)
    os.utime(image, ns=(status.st_atime_ns, status.st_mtime_ns))
    _fails(
        _resume(out),
        capsys,
        "the data changed since it started: image",
        f"goldfish/{image.name}",
        "has other content now",
    )


def test_a_changed_image_in_a_scored_batch_is_refused(tmp_path, dataset, weights, capsys):
    out = tmp_path / "out"
    assert cli.main(_argv(dataset, out, weights)) == 0
    image = sorted((dataset / "n01440764").glob("*.jpg"))[0]
    image.write_bytes(image.read_bytes() + b"\x00")
    _fails(_resume(out), capsys, "has other content now (size")


def test_touched_files_with_the_same_bytes_resume(tmp_path, dataset, weights):
    out = tmp_path / "out"
    assert cli.main(_argv(dataset, out, weights)) == 0
    _drop_batches(out, 1)
    for image in dataset.rglob("*.jpg"):
        os.utime(image, (1e9, 1e9))  # touched (a copy without -p): the content is the same
    assert cli.main(_resume(out)) == 0
    assert read_manifest(out)["state"] == "complete"


def test_a_batch_size_edited_in_the_manifest_is_refused_by_name(tmp_path, finished, capsys):
    out = _copy(finished, tmp_path)
    _drop_batches(out, 2)
    manifest = read_manifest(out)
    manifest["settings"]["batch_size"] = 3
    (out / MANIFEST).write_text(json.dumps(manifest))
    _fails(_resume(out), capsys, "was scored with other settings (--batch-size 2 then, 3 now)")
    assert len(_rows(out / "dataset.csv")) == 6


def test_a_run_killed_while_its_listing_was_written_resumes(tmp_path, dataset, weights):
    out = tmp_path / "out"
    assert cli.main(_argv(dataset, out, weights)) == 0
    reference = _rows(out / "images.csv")
    manifest = read_manifest(out)  # the folder as a kill during dataset.csv's write leaves it
    for name in manifest["files"]:
        if name != "dataset.csv":
            (out / name).unlink()
    (out / "dataset.csv").unlink()
    (out / "parts").rmdir()
    manifest.update(state="running", files=["dataset.csv"], attempts=1)
    manifest.pop("data")
    manifest.pop("summary")
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert cli.main(_resume(out)) == 0
    assert _rows(out / "images.csv") == reference


def test_a_lost_listing_is_written_again_when_the_data_are_the_runs(
    tmp_path, dataset, weights, capsys
):
    out = tmp_path / "out"
    assert cli.main(_argv(dataset, out, weights)) == 0
    _drop_batches(out, 1)
    (out / "dataset.csv").unlink()
    assert cli.main(_resume(out)) == 0
    assert len(_rows(out / "dataset.csv")) == 6
    _drop_batches(out, 1)
    (out / "dataset.csv").unlink()
    shutil.rmtree(dataset / "goldfish")
    _fails(_resume(out), capsys, "dataset.csv is missing", "--overwrite")


def test_a_damaged_manifest_resumes_from_its_copy_or_restarts(tmp_path, dataset, weights):
    out = tmp_path / "out"
    assert cli.main(_argv(dataset, out, weights)) == 0
    _drop_batches(out, 1)
    (out / MANIFEST).write_text('{"command": "comp')
    assert cli.main(_resume(out)) == 0
    (out / MANIFEST).write_text("")
    assert cli.main(_argv(dataset, out, weights, "--overwrite")) == 0
    assert read_manifest(out)["attempts"] == 1


def test_resuming_a_complete_run_keeps_its_timing(tmp_path, finished):
    out = _copy(finished, tmp_path)
    before = read_manifest(out)["summary"]
    assert cli.main(_resume(out)) == 0
    after = read_manifest(out)["summary"]
    assert after["seconds"] == before["seconds"] > 0
    assert after["images per second"] == before["images per second"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: [r], "(a list, not a record)"),
        (lambda r: {k: v for k, v in r.items() if k != "images"}, "its images are not a list"),
        (lambda r: {**r, "images": [{"position": 0}, r["images"][1]]}, "lacks target, Y"),
        (lambda r: {**r, "images": r["images"][:1]}, "holds the images at positions [0]"),
        (lambda r: {**r, "batch": 99}, "unknown batch 99"),
    ],
)
def test_a_damaged_part_record_is_named_by_file_and_line(
    tmp_path, finished, capsys, damage, message
):
    out = _copy(finished, tmp_path)
    (part,) = (out / "parts").glob("*.jsonl")
    lines = part.read_text().splitlines()
    lines[0] = json.dumps(damage(json.loads(lines[0])))
    part.write_text("\n".join(lines) + "\n")
    _fails(_resume(out), capsys, f"{part.name}, line 1", message)


def test_formula_names_are_neutralised_in_every_table(tmp_path, weights):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("=cmd|' -C calc'!A0", "+SUM(1)", "-2+3", "@A1"):
        Image.new("RGB", (40, 40), (200, 30, 30)).save(photos / f"{name}.png")
    out = tmp_path / "out"
    assert cli.main(_argv(photos, out, weights)) == 0
    for table in ("dataset.csv", "images.csv"):
        cells = [row["image"] for row in _rows(out / table)]
        assert cells and all(cell.startswith("'") for cell in cells), (table, cells)
    assert (out / "images.csv").read_text().count("'=cmd|' -C calc'!A0") >= 1


def test_undecodable_file_names_are_written_escaped_and_the_run_completes(
    tmp_path, weights, capsys
):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 40), (20, 130, 30)).save(os.fsdecode(bytes(photos) + b"/caf\xe9.png"))
    out = tmp_path / "out"
    assert cli.main(_argv(photos, out, weights, quiet=False)) == 0  # not quiet: it prints
    capsys.readouterr()
    assert read_manifest(out)["state"] == "complete"
    assert [row["image"] for row in _rows(out / "images.csv")][0] == "caf\\xe9"
    assert "caf\\xe9" in (out / "dataset.csv").read_text()


def test_pillow_formats_are_read_and_odd_files_are_reported(tmp_path, weights, capsys):
    from PIL import Image

    data = tmp_path / "classes"
    for shade, (folder, suffix, fmt) in enumerate(
        [
            ("goldfish", ".ppm", "PPM"),
            ("goldfish", ".jfif", "JPEG"),
            ("n01440764", ".tga", "TGA"),
            ("n01440764", ".jpe", "JPEG"),
        ]
    ):  # other colours: the same bytes in two classes would be refused
        (data / folder).mkdir(parents=True, exist_ok=True)
        colour = (20 + 40 * shade, 130, 30)
        Image.new("RGB", (40, 40), colour).save(data / folder / f"a{suffix}", format=fmt)
    os.symlink("loop-b", data / "goldfish" / "loop-a.png")
    os.symlink("loop-a.png", data / "goldfish" / "loop-b.png")
    out = tmp_path / "out"
    assert cli.main(_argv(data, out, weights, quiet=False)) == 0
    printed = capsys.readouterr()
    assert "2 files of the class folders were not read (listed in report.md)" in printed.out
    assert len(_rows(out / "dataset.csv")) == 4
    report = (out / "report.md").read_text()
    assert "`goldfish/loop-a.png`: a symbolic link that loops" in report


class _OtherProcessesAgree(Processes):
    """One of several processes whose start and agreements succeed without a process group;
    its gather is the real one (:func:`metrics.distributed.gather`, replaced by a test)."""

    def start(self, device) -> None:
        pass

    def agree(self, error):
        return error

    def share(self, value):
        return value


class _TwoProcesses(_OtherProcessesAgree):
    """One of two processes whose collectives all succeed (each gets its own values back)."""

    def gather(self, value):
        return [value, value]


def test_a_torchrun_process_that_dies_leaves_the_resume_command(
    tmp_path, dataset, weights, monkeypatch, capsys
):
    def lost_peer(value, world):
        raise RuntimeError("[gloo] Connection closed by peer [127.0.0.1]:29500")

    monkeypatch.setattr(
        compare_job.Processes, "from_environment", lambda: _OtherProcessesAgree(0, 2)
    )
    monkeypatch.setattr(processes_module, "gather", lost_peer)
    out = tmp_path / "out"
    _fails(
        _argv(dataset, out, weights),
        capsys,
        "process 0 of 2 lost the others: another process stopped",
        "(RuntimeError: [gloo] Connection closed by peer",
        "run the same torchrun command with --resume",
        f"-o {out} --resume",
        lines=2,
        status=errors.FAILURE,
    )
    assert not list(out.glob(f"{TEMPORARY}*"))


@pytest.mark.parametrize("rank", [0, 1])
def test_a_torchrun_process_reports_its_own_error_as_itself(
    tmp_path, dataset, weights, monkeypatch, capsys, rank
):
    def broken(shard):
        raise ZeroDivisionError("a bug in the scoring")

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setattr(compare_job.Processes, "from_environment", lambda: _TwoProcesses(rank, 2))
    monkeypatch.setattr(compare_job, "score_shard", broken)
    out = tmp_path / "out"
    assert cli.main(_argv(dataset, out, weights)) == errors.FAILURE
    assert capsys.readouterr().err == (
        f"camplus: error (process {rank} of 2): ZeroDivisionError: a bug in the scoring (a "
        "failure; set CAMPLUS_TRACEBACK=1 to see the traceback)\n"
    )
    monkeypatch.setenv("CAMPLUS_TRACEBACK", "1")
    assert cli.main(_argv(dataset, out, weights)) == errors.FAILURE
    assert "in broken\n    raise ZeroDivisionError" in capsys.readouterr().err


def test_a_failed_collective_is_a_peer_failure_and_the_timeout_is_bounded(monkeypatch):
    def lost() -> None:
        raise torch.distributed.DistNetworkError("Connection reset by peer")

    with pytest.raises(PeerProcessFailed, match=r"process 1 of 3 lost the others: .*reset"):
        Processes(rank=1, world=3)._collective(lost)
    assert process_timeout() == TIMEOUT == timedelta(minutes=30)
    monkeypatch.setenv(TIMEOUT_VARIABLE, "90")
    assert process_timeout() == timedelta(minutes=90)
    monkeypatch.setenv(TIMEOUT_VARIABLE, "never")
    with pytest.raises(errors.UsageError, match="CAMPLUS_PROCESS_TIMEOUT='never' is not"):
        process_timeout()


def test_a_bug_in_the_transform_stops_the_run_instead_of_making_images_unreadable(
    tmp_path, dataset, weights, monkeypatch, capsys
):
    def broken_transform(image):
        raise ZeroDivisionError("a bug in the transform")

    real = zoo.load_classifier
    monkeypatch.setattr(
        zoo, "load_classifier", lambda *a: replace(real(*a), transform=broken_transform)
    )
    monkeypatch.setattr(zoo.Classifier, "check_layer", lambda self, layout: None)
    out = tmp_path / "out"
    _fails(
        _argv(dataset, out, weights),
        capsys,
        "camplus: error: ZeroDivisionError: a bug in the transform",
        status=errors.FAILURE,
    )
    assert not out.exists()


def test_explain_with_undecodable_and_formula_names(tmp_path, weights, capsys):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in (b"caf\xe9", b"=1+1"):
        path = os.fsdecode(bytes(photos) + b"/" + name + b".png")
        Image.new("RGB", (40, 40), (20, 130, 30)).save(path)
    out = tmp_path / "out"
    argv = ["explain", str(photos), "-o", str(out), "--model", ARCH, "--weights", str(weights)]
    assert cli.main([*argv, "--methods", "gradcam"]) == 0
    printed = capsys.readouterr().out
    assert "caf\\xe9: " in printed
    assert sorted(row["image"] for row in _rows(out / "predictions.csv")) == ["'=1+1", "caf\\xe9"]
    assert (out / os.fsdecode(b"caf\xe9.png")).is_file()  # the file keeps its real name


def _children(pid: int) -> list[int]:
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


@pytest.mark.slow  # torchrun and two workers start twice: about 40 s on 2 cores
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the workers in /proc")
def test_a_torchrun_rank_killed_leaves_the_resume_command_and_resume_completes(tmp_path, weights):
    import signal
    import subprocess
    import sys
    import time

    data = tmp_path / "classes"
    write_dataset(data, 24, FOLDERS, seed=2, size=48)
    out = tmp_path / "out"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    command = [torchrun, "--nproc_per_node=2", "-m", "camplus_app", *_argv(data, out, weights)]
    environment = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "OMP_NUM_THREADS": "1",
    }
    process = subprocess.Popen(
        command,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        parts = list(out.glob("parts/*rank1.jsonl"))
        if parts and parts[0].read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before a process could be killed"
    rank1 = next(
        worker
        for worker in _children(process.pid)
        if b"RANK=1" in Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
    )
    os.kill(rank1, signal.SIGKILL)
    _, stderr = process.communicate(timeout=300)
    assert "a process of this torchrun run failed" in stderr, stderr[-3000:]
    assert f"-o {out} --resume" in stderr
    resumed = subprocess.run(
        [*command, "--resume"], env=environment, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_manifest(out)["state"] == "complete"
    assert len(_rows(out / "images.csv")) > 0
