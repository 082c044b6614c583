"""``camplus compare`` on a data set: true labels, unmatched folders, subsets, unreadable images,
resuming after Ctrl-C or ``kill -9``, changed settings, and two processes under ``torchrun``.

A tiny random-init timm model with 1000 classes (so synset ids and ImageNet class names map)
stands in for the bundled EfficientNet; the data are crops of the bundled photographs written by
``benchmarks.make_dataset``.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

timm = pytest.importorskip("timm")
pytest.importorskip("skimage")
pytest.importorskip("matplotlib")
pytest.importorskip("quantus")
from benchmarks.make_dataset import write_dataset  # noqa: E402
from camplus_app import cli, zoo  # noqa: E402
from camplus_app.images import read_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ARCH = "test_efficientnet"
#: Photograph -> class folder: a synset id (class 0), a class name (1), a class index (2).
FOLDERS = {"coffee": "n01440764", "chelsea": "goldfish", "camera": "2"}
TABLES = ("scores.csv", "relative_performance.csv", "pairwise.csv", "images.csv")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = timm.create_model(ARCH, num_classes=1000)
    with torch.no_grad():  # sharper outputs than the init's: some images pass a threshold
        net.get_classifier().weight.mul_(30)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "classes"
    write_dataset(root, 12, FOLDERS, seed=1, size=64)
    return root


def _argv(data: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    model = ["--model", ARCH, "--weights", str(weights), "--batch-size", "2", "--workers", "0"]
    return ["compare", str(data), "-o", str(out), "-q", *model, *extra]


def _independent_y(weights: Path, files: list[str], labels: list[int]) -> list[float]:
    """Softmax of the true class on each image, computed here in float64 from the model."""
    clf = zoo.load_classifier(ARCH, weights)
    x = torch.stack([clf.transform(read_image(f)) for f in files])
    net = clf.model.double()
    with torch.no_grad():
        p = net(x.double()).softmax(dim=1)
    return p[torch.arange(len(labels)), torch.tensor(labels)].tolist()


def test_class_folders_explain_the_true_class_above_the_threshold(tmp_path, dataset, weights):
    everything = tmp_path / "all"
    assert cli.main(_argv(dataset, everything, weights)) == 0
    listed = _rows(everything / "dataset.csv")
    labels = {"n01440764": 0, "goldfish": 1, "2": 2}
    assert [int(r["label"]) for r in listed] == [labels[r["path"].split("/")[0]] for r in listed]
    rows = [r for r in _rows(everything / "images.csv") if r["method"] == "Grad-CAM"]
    rows = [r for r in rows if r["maps"] == "pre-softmax"]
    assert [int(r["target"]) for r in rows] == [int(r["label"]) for r in listed]  # true class
    files = [str(dataset / r["path"]) for r in listed]
    y = _independent_y(weights, files, [int(r["label"]) for r in listed])
    assert [float(r["Y"]) for r in rows] == pytest.approx(y, rel=1e-4)

    ordered = sorted(y)
    threshold = (ordered[len(y) // 2] + ordered[len(y) // 2 - 1]) / 2  # half the images pass
    kept = tmp_path / "kept"
    assert cli.main(_argv(dataset, kept, weights, "--threshold", f"{threshold}")) == 0
    scored = {int(r["index"]) for r in _rows(kept / "images.csv")}
    assert scored == {i for i, v in enumerate(y) if v > threshold} and 0 < len(scored) < len(y)
    summary = json.loads((kept / "manifest.json").read_text())["summary"]
    assert summary["scored"] == len(scored) and summary["below threshold"] == len(y) - len(scored)
    before = {
        (r["index"], r["maps"], r["method"]): float(r["O"])
        for r in _rows(everything / "images.csv")
    }
    for row in _rows(kept / "images.csv"):
        assert float(row["O"]) == pytest.approx(
            before[row["index"], row["maps"], row["method"]], rel=1e-5
        )
    report = (kept / "report.md").read_text()
    assert f"softmax > {threshold}" in report and "the true class" in report
    assert cli.main(_argv(dataset, tmp_path / "target", weights, "--target", "3")) == 2


def test_folders_that_match_no_class_are_named(tmp_path, dataset, weights, capsys):
    data = tmp_path / "data"
    write_dataset(data, 6, {"coffee": "tench", "chelsea": "cats", "camera": "n99999999"}, size=32)
    out = tmp_path / "out"
    assert cli.main(_argv(data, out, weights)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 of 3 class folders" in err
    assert "cats: unknown class 'cats'" in err and "n99999999 is not an ImageNet-1k synset" in err
    assert "--skip-unmatched" in err and not out.exists()
    assert cli.main(_argv(data, out, weights, "--skip-unmatched")) == 0
    assert {r["path"].split("/")[0] for r in _rows(out / "dataset.csv")} == {"tench"}
    assert "`cats`: unknown class" in (out / "report.md").read_text()
    none = tmp_path / "none"
    write_dataset(none, 2, {"coffee": "cats"}, size=32)
    assert cli.main(_argv(none, tmp_path / "out2", weights, "--skip-unmatched")) == 2
    assert "1 of 1 class folders" in capsys.readouterr().err


def test_limit_and_seed_pick_a_reproducible_subset(tmp_path, dataset, weights):
    def subset(name: str, seed: str) -> list[str]:
        out = tmp_path / name
        assert (
            cli.main(
                _argv(dataset, out, weights, "--limit", "5", "--seed", seed, "--methods", "gradcam")
            )
            == 0
        )
        return [r["path"] for r in _rows(out / "dataset.csv")]

    first, again, other = subset("a", "3"), subset("b", "3"), subset("c", "4")
    assert first == again and len(first) == 5 and first != other
    everything = [
        r for r in sorted(p.relative_to(dataset).as_posix() for p in dataset.rglob("*.jpg"))
    ]
    assert set(first) <= set(everything) and first == sorted(first)


def test_an_unreadable_image_is_reported_and_skipped(tmp_path, weights):
    data = tmp_path / "data"
    write_dataset(data, 5, FOLDERS, size=32)
    broken = data / "goldfish" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not a JPEG")
    truncated = data / "2" / "truncated.png"
    source = next((data / "2").glob("*.jpg"))
    read_image(source).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    out = tmp_path / "out"
    assert cli.main([*_argv(data, out, weights)[:-2], "--workers", "1"]) == 0
    bad = {r["image"]: r["error"] for r in _rows(out / "unreadable.csv")}
    assert set(bad) == {str(broken), str(truncated)}
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    assert (summary["images"], summary["unreadable"], summary["scored"]) == (7, 2, 5)
    assert "## Unreadable images (2" in (out / "report.md").read_text()
    assert {int(r["index"]) for r in _rows(out / "images.csv")} == {
        int(r["position"])
        for r in _rows(out / "dataset.csv")
        if "broken" not in r["path"] and "truncated" not in r["path"]
    }


def test_resume_refuses_changed_settings_and_data(tmp_path, dataset, weights, capsys):
    out = tmp_path / "out"
    argv = _argv(dataset, out, weights, "--methods", "gradcam,gradcam++", "--limit", "4")
    assert cli.main(argv) == 0
    assert cli.main(argv) == 2
    assert "holds a complete camplus compare run: pass --overwrite" in capsys.readouterr().err
    for change, message in [
        (["--threshold", "0.2"], "with --threshold 0.2: it was started with none"),
        (
            ["--methods", "gradcam"],
            "with --methods Grad-CAM: it was started with Grad-CAM,Grad-CAM++",
        ),
        (["--layer", "conv_head"], "with --layer conv_head: it was started with"),
        (["--limit", "5"], "with --limit 5: it was started with 4"),
        (["--model", "test_resnet"], "with --model test_resnet"),
    ]:
        assert cli.main(["compare", "-o", str(out), "--resume", "-q", *change]) == 2, change
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert cli.main(["compare", "-o", str(out), "--resume", "-q"]) == 0  # its own settings
    copy = tmp_path / "copy"
    write_dataset(copy, 4, FOLDERS, seed=1, size=64)
    resumed = tmp_path / "resumed"
    assert cli.main(_argv(copy, resumed, weights, "--limit", "3")) == 0
    first = next((copy / "goldfish").glob("*.jpg"))
    (copy / "goldfish" / "added.jpg").write_bytes(first.read_bytes())  # one image more
    assert cli.main(["compare", "-o", str(resumed), "--resume", "-q"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume the run in" in err and "the data changed since it started" in err
    assert cli.main(["compare", "-o", str(tmp_path / "nothing"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert cli.main([*argv, "--resume", "--overwrite"]) == 2


# --------------------------------------------------------------------------- subprocesses


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _command(data: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    argv = _argv(data, out, weights, "--workers", "1", *extra)
    argv.remove("-q")
    return [sys.executable, "-m", "camplus_app", *argv]


def _interrupt(command: list[str], part_files: Path, sig: int) -> subprocess.CompletedProcess:
    """Start the command in a session of its own, send ``sig`` to all its processes (as a
    terminal's Ctrl-C does) once its first batch is on disk, and wait for it to end."""
    process = subprocess.Popen(
        command,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        files = list(part_files.glob("*.jsonl")) if part_files.exists() else []
        if any(f.read_text().count("\n") >= 1 for f in files):
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be interrupted"
    os.killpg(process.pid, sig)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command, env=env or _environment(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def big_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("big") / "classes"
    write_dataset(root, 40, FOLDERS, seed=2, size=64)
    return root


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, big_dataset, weights) -> Path:
    """One run in a subprocess, as the others (the same threads: the same float32 sums)."""
    out = tmp_path_factory.mktemp("whole") / "out"
    _run([*_command(big_dataset, out, weights, "--threshold", "0.001"), "-q"])
    return out


def _assert_same_tables(a: Path, b: Path) -> None:
    for name in TABLES:
        assert (a / name).read_text() == (b / name).read_text(), name


@pytest.mark.slow  # two interpreters start: about 20 s on 2 cores
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_resume_after_an_interruption_equals_an_uninterrupted_run(
    tmp_path, big_dataset, weights, uninterrupted, sig
):
    out = tmp_path / "out"
    first = _interrupt(
        _command(big_dataset, out, weights, "--threshold", "0.001"), out / "parts", sig
    )
    if sig == signal.SIGINT:
        assert first.returncode == 130, first.stderr
        assert "interrupted: the batches scored so far are saved in" in first.stderr
        assert f"camplus compare {big_dataset} -o {out} --resume" in first.stderr
        assert "Traceback" not in first.stderr
    else:
        assert first.returncode == -signal.SIGKILL
        (part,) = (out / "parts").glob("*.jsonl")
        with part.open("a") as file:  # a write cut off by the kill
            file.write('{"batch": 19, "images": [{"posi')
    assert not (out / "scores.csv").exists()
    scored_before = sum(f.read_text().count("\n") for f in (out / "parts").glob("*.jsonl"))
    assert 1 <= scored_before < 20
    _run([sys.executable, "-m", "camplus_app", "compare", "-o", str(out), "--resume", "-q"])
    _assert_same_tables(out, uninterrupted)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["attempts"] == 2 and manifest["state"] == "complete"


@pytest.mark.slow  # four interpreters start: about 40 s on 2 cores
def test_two_gloo_processes_equal_one_process(tmp_path, big_dataset, weights, uninterrupted):
    out = tmp_path / "out"
    command = _command(big_dataset, out, weights, "--threshold", "0.001", "-q")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    _run([*torchrun, "-m", "camplus_app", *command[3:]])
    _assert_same_tables(out, uninterrupted)
    parts = sorted(p.name for p in (out / "parts").glob("*.jsonl"))
    assert parts == ["001-rank0.jsonl", "001-rank1.jsonl"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["processes"] == 2
    assert (manifest["provenance"]["processes"], manifest["provenance"]["threads"]) == (2, 1)
    # one process at torch's default threads told to use one (--threads 1), as torchrun does:
    # byte-equal tables, intervals included
    single = tmp_path / "single"
    default = {k: v for k, v in _environment().items() if k != "OMP_NUM_THREADS"}
    _run(_command(big_dataset, single, weights, "--threshold", "0.001", "--threads", "1"), default)
    _assert_same_tables(out, single)
    provenance = json.loads((single / "manifest.json").read_text())["provenance"]
    assert (provenance["processes"], provenance["threads"]) == (1, 1)


class _Stub:
    """What the listing needs of a classifier: its name, class names and their lookup."""

    name = "stub"
    categories = [f"class {i}" for i in range(998)] + ["tench", "goldfish"]

    def class_index(self, target: str) -> int:
        if target.isdigit() and int(target) < len(self.categories):
            return int(target)
        if target in self.categories:
            return self.categories.index(target)
        raise ValueError(f"unknown class {target!r}")


def test_listing_rules(tmp_path):
    from camplus_app.datasets import find_images, folder_class, is_class_folder_set, select

    stub = _Stub()
    assert folder_class("n01440764", stub) == 0  # synset ids through timm's ImageNet info
    assert folder_class("n01443537", stub) == 1
    assert folder_class("998", stub) == 998 and folder_class("goldfish", stub) == 999
    with pytest.raises(ValueError, match="not an ImageNet-1k synset id"):
        folder_class("n00000000", stub)
    assert select(10, None, 0) == list(range(10)) and select(10, 20, 0) == list(range(10))
    assert select(10, 4, 7) == select(10, 4, 7) == sorted(select(10, 4, 7))
    write_dataset(tmp_path / "set", 2, {"coffee": "tench"}, size=16)
    assert is_class_folder_set(tmp_path / "set") and not is_class_folder_set(
        tmp_path / "set" / "tench"
    )
    flat = find_images([str(tmp_path / "set" / "tench"), "coffee"], stub)
    assert flat.kind == "images" and [e.label for e in flat.entries] == [None] * 3
    assert [e.name for e in flat.entries][-1] == "coffee" and flat.entries[-1].path is None
    with pytest.raises(ValueError, match="give it alone"):
        find_images([str(tmp_path / "set"), "coffee"], stub)
    (tmp_path / "set" / "loose.jpg").write_bytes(
        (tmp_path / "set" / "tench" / "coffee_000000.jpg").read_bytes()
    )
    mixed = find_images([str(tmp_path / "set")], stub)  # images of its own: a flat folder
    assert mixed.kind == "images" and [e.name for e in mixed.entries] == ["loose"]
    assert find_images([], stub).kind == "bundled photographs"


def test_a_bundled_photograph_named_twice_is_read_twice():
    from camplus_app.datasets import ImageDataset, find_images

    listing = find_images(["coffee", "coffee"], _Stub())
    assert [e.name for e in listing.entries] == ["coffee", "coffee-2"]
    dataset = ImageDataset(listing.entries, lambda image: torch.zeros(1))
    assert [dataset[i].error for i in range(2)] == [None, None]


def test_only_a_file_that_cannot_be_decoded_is_unreadable(tmp_path) -> None:
    from PIL import Image

    from camplus_app.datasets import ImageDataset, ImageEntry

    good, broken = tmp_path / "good.png", tmp_path / "broken.png"
    Image.new("RGB", (8, 8)).save(good)
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not a PNG")
    entries = [ImageEntry("good", str(good), None), ImageEntry("broken", str(broken), None)]
    dataset = ImageDataset(entries, lambda image: torch.zeros(3, 8, 8))
    assert dataset[0].error is None and dataset[1].image is None
    assert dataset[1].error.startswith(f"not a readable image: {broken}")

    def buggy(image):
        raise MemoryError

    with pytest.raises(MemoryError):  # a bug or no memory is a failure, not an unreadable file
        ImageDataset(entries, buggy)[0]
