"""``camplus compare --metrics``: the perturbation metrics of Petsiuk et al. (2018, RISE,
arXiv:1806.07421) and Rong et al. (2022, ROAD, arXiv:2202.00449) beside the papers' metrics,
checked against :mod:`metrics.perturbation` called directly on the same maps, and the
randomisation check of Adebayo et al. (2018, "Sanity Checks for Saliency Maps",
arXiv:1810.03292) against scipy's Spearman correlation of float64 maps; a resumed run and a
``torchrun`` run equal one uninterrupted process.

A tiny random-init timm model with 1000 classes stands in for the bundled EfficientNet; the
data are crops of the bundled photographs written by ``benchmarks.make_dataset``.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

timm = pytest.importorskip("timm")
pytest.importorskip("skimage")
pytest.importorskip("matplotlib")
pytest.importorskip("quantus")
import metrics  # noqa: E402
from benchmarks.make_dataset import write_dataset  # noqa: E402
from camplus_app import cli, errors, zoo  # noqa: E402
from camplus_app.datasets import ImageDataset, find_images  # noqa: E402
from camplus_app.options import LAYOUT  # noqa: E402
from camplus_app.runs import MANIFEST, read_manifest  # noqa: E402
from captum_camplus import upsample_and_normalize  # noqa: E402
from metrics.choices import CHOICES, RANDOMISATION, STEPS  # noqa: E402
from metrics.confidence import model_forward  # noqa: E402
from metrics.heatmaps import MAPS_FROM, compute_cams  # noqa: E402

ARCH = "test_efficientnet"
FOLDERS = {"coffee": "n01440764", "chelsea": "goldfish", "camera": "2"}
IMAGES = 6
#: ROAD's imputation at the model's 224-pixel input takes minutes on a CPU: the command runs
#: deletion and insertion here, and tests/metrics/test_metrics_choices.py checks ROAD in the
#: same batch step on small images.
CHOSEN = ["deletion", "insertion", "randomisation"]
COLUMNS = [CHOICES[name].column for name in CHOSEN]
PAPERS_FILES = ["scores.csv", "images.csv", "relative_performance.csv", "pairwise.csv"]
ROOT = Path(__file__).resolve().parents[2]


def _range(column: str) -> tuple[float, float]:
    """A column's values: AUCs in [0, 1], rank correlations in [-1, 1]."""
    return (-1.0, 1.0) if column == RANDOMISATION else (0.0, 1.0)


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


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "classes"
    write_dataset(root, IMAGES, FOLDERS, seed=1, size=48)
    return root


def _argv(data: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    model = ["--model", ARCH, "--weights", str(weights), "--workers", "0", "-q"]
    methods = ["--methods", "gradcam,hirescam"]
    return ["compare", str(data), "-o", str(out), *methods, *model, *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data, weights) -> dict[str, Path]:
    """A default run and a ``--metrics deletion,insertion,randomisation`` run of the same
    images, one batch each."""
    root = tmp_path_factory.mktemp("runs")
    folders = {"default": root / "default", "all": root / "all"}
    assert cli.main(_argv(data, folders["default"], weights, "--batch-size", "6")) == 0
    argv = _argv(data, folders["all"], weights, "--batch-size", "6", "--metrics", ",".join(CHOSEN))
    assert cli.main(argv) == 0
    return folders


def _fails(argv: list[str], capsys, *messages: str) -> str:
    assert cli.main(argv) == errors.USAGE_ERROR
    err = capsys.readouterr().err
    assert err.startswith("camplus: error: ") and err.count("\n") == 1, err
    for message in messages:
        assert message in err, err
    return err


def test_default_run_has_only_the_papers_columns(runs) -> None:
    out = runs["default"]
    for name in PAPERS_FILES:
        header = _rows(out / name)[0]
        assert not [key for key in header if any(key.startswith(c) for c in COLUMNS)], name
    assert read_manifest(out)["settings"]["metrics"] == ["papers"]
    assert "## Scores" in (out / "report.md").read_text()
    assert "deletion" not in (out / "report.md").read_text()


def test_chosen_metrics_leave_the_papers_values_as_they_were(runs) -> None:
    """Every column of the default run has the same values in the ``--metrics all`` run."""
    for name in PAPERS_FILES:
        default, chosen = _rows(runs["default"] / name), _rows(runs["all"] / name)
        assert len(default) == len(chosen)
        for before, after in zip(default, chosen, strict=True):
            assert before == {key: after[key] for key in before}, name


def test_chosen_metrics_have_columns_and_intervals(runs) -> None:
    out = runs["all"]
    scores = _rows(out / "scores.csv")
    assert len(scores) == 2 * len(MAPS_FROM)  # two methods, two kinds of map
    for row in scores:
        for column in COLUMNS:
            low, value, high = (float(row[column + s]) for s in (" ci low", "", " ci high"))
            bottom, top = _range(column)
            assert bottom <= low <= value <= high <= top, (column, row)
    pairwise = _rows(out / "pairwise.csv")
    for row in pairwise:
        for column in COLUMNS:
            name = f"{column} first - second"
            low, value, high = (float(row[name + s]) for s in (" ci low", "", " ci high"))
            assert low <= value <= high
    images = _rows(out / "images.csv")
    for column in COLUMNS:
        # the summary is the mean of the per-image values
        for row in scores:
            mine = [
                float(r[column])
                for r in images
                if r["maps"] == row["maps"] and r["method"] == row["method"]
            ]
            assert len(mine) == IMAGES
            assert sum(mine) / IMAGES == pytest.approx(float(row[column]), rel=1e-12)
        # the pairwise difference is the difference of the two methods' means
        for row in pairwise:
            first, second = row["methods"].split(" vs ")
            means = {r["method"]: float(r[column]) for r in scores if r["maps"] == row["maps"]}
            difference = float(row[f"{column} first - second"])
            assert difference == pytest.approx(means[first] - means[second], abs=1e-12)
    report = (out / "report.md").read_text()
    for name in CHOSEN:
        assert f"- `{CHOICES[name].column}` ({CHOICES[name].direction}): " in report
    assert "| metrics | papers, deletion, insertion, randomisation |" in report
    assert "`randomisation Spearman` (lower is better): Spearman rank correlation" in report


def test_chosen_metrics_equal_the_functions_on_the_same_maps(runs, data, weights) -> None:
    """Each per-image value equals :func:`metrics.deletion_auc` and :func:`metrics.insertion_auc`
    on the maps of :func:`compute_cams`, and the randomisation check scipy's Spearman
    correlation of the float64 maps of the model and of a copy whose classifier (the layer
    above the CAM layer ``bn2``) is re-initialised by hand from the run's seed (0) and the
    batch's first position (0)."""
    out = runs["all"]
    settings = read_manifest(out)["settings"]
    clf = zoo.load_classifier(ARCH, weights, settings["layer"])
    listing = find_images([str(data)], clf)
    dataset = ImageDataset(listing.entries, clf.transform)
    x = torch.stack([dataset[p].image for p in range(IMAGES)])
    target = torch.tensor([entry.label for entry in listing.entries[:IMAGES]])
    maps, keys = [], []
    for source in MAPS_FROM:
        cams = compute_cams(
            clf.model, clf.layer, x, target, settings["methods"], source, layout=LAYOUT
        )
        for method in settings["methods"]:
            maps.append(upsample_and_normalize(cams[method], x.shape[2:]))
            keys.append((source, method))
    stacked = torch.stack(maps)
    forward = model_forward(clf.model)
    with torch.no_grad():
        expected = {
            "deletion AUC": metrics.deletion_auc(forward, x, stacked, target, steps=STEPS),
            "insertion AUC": metrics.insertion_auc(forward, x, stacked, target, steps=STEPS),
        }
    stats = pytest.importorskip("scipy.stats")
    twin = copy.deepcopy(clf.model)
    torch.manual_seed(0)
    twin.get_submodule("net.classifier").reset_parameters()
    twin, trained, x64 = twin.double(), copy.deepcopy(clf.model).double(), x.double()
    rho = []
    layer = next(name for name, m in clf.model.named_modules() if m is clf.layer)
    for source in MAPS_FROM:
        before = compute_cams(
            trained, layer, x64, target, settings["methods"], source, layout=LAYOUT
        )
        after = compute_cams(twin, layer, x64, target, settings["methods"], source, layout=LAYOUT)
        for method in settings["methods"]:
            a, b = before[method].flatten(1).numpy(), after[method].flatten(1).numpy()
            rho.append([stats.spearmanr(a[i], b[i]).statistic for i in range(IMAGES)])
    expected[RANDOMISATION] = torch.tensor(rho, dtype=torch.float64)
    images = _rows(out / "images.csv")
    for k, (source, method) in enumerate(keys):
        mine = sorted(
            (r for r in images if r["maps"] == source and r["method"] == method),
            key=lambda r: int(r["index"]),
        )
        assert [int(r["target"]) for r in mine] == target.tolist()
        for column, values in expected.items():
            got = torch.tensor([float(r[column]) for r in mine], dtype=torch.float64)
            torch.testing.assert_close(got, values[k], rtol=0, atol=1e-5)


def test_unknown_metric_is_refused_with_the_names(tmp_path, data, weights, capsys) -> None:
    out = tmp_path / "out"
    _fails(
        _argv(data, out, weights, "--metrics", "deletion,delete"),
        capsys,
        "--metrics: unknown metric 'delete'",
        "all or a comma-separated list of papers, deletion, insertion, road-morf, road-lerf",
    )
    assert not out.exists()


def test_metric_the_scores_leave_undefined_is_refused_up_front(
    tmp_path, data, weights, capsys
) -> None:
    out = tmp_path / "out"
    _fails(
        _argv(data, out, weights, "--scores", "raw", "--metrics", "insertion,road-morf"),
        capsys,
        "--metrics insertion,road-morf is not defined under --scores raw",
        "use --scores softmax or sigmoid",
    )
    assert not out.exists()
    # the default (papers' metrics only) is still n/a where undefined, not refused
    assert cli.main(_argv(data, out, weights, "--scores", "raw", "--limit", "2")) == 0


def test_resume_with_other_metrics_is_refused(tmp_path, runs, capsys) -> None:
    resume = ["compare", "-o", str(runs["default"]), "--resume", "-q", "--workers", "0"]
    _fails(
        [*resume, "--metrics", "deletion"],
        capsys,
        "--metrics papers,deletion: it was started with papers",
    )


def test_run_recorded_before_metrics_resumes_as_the_default(tmp_path, data, weights) -> None:
    """A run whose manifest and part files predate ``--metrics`` resumes with the papers'
    metrics, and its tables are those of an uninterrupted run."""
    out = tmp_path / "out"
    assert cli.main(_argv(data, out, weights, "--batch-size", "2")) == 0
    expected = _rows(out / "scores.csv")
    manifest = read_manifest(out)
    del manifest["settings"]["metrics"]
    manifest["state"] = "running"
    (out / MANIFEST).write_text(json.dumps(manifest))
    (part,) = sorted((out / "parts").glob("*.jsonl"))
    records = [json.loads(line) for line in part.read_text().splitlines()]
    for record in records:
        del record["settings"]["metrics"]
    part.write_text("".join(json.dumps(r) + "\n" for r in records[:1]))  # killed after one
    assert cli.main(["compare", "-o", str(out), "--resume", "-q", "--workers", "0"]) == 0
    assert read_manifest(out)["settings"]["metrics"] == ["papers"]
    assert _rows(out / "scores.csv") == expected


def _interrupted_after_one_batch(out: Path) -> None:
    """The run in ``out`` as a process killed after its first batch leaves it."""
    manifest = read_manifest(out)
    manifest["state"] = "running"
    (out / MANIFEST).write_text(json.dumps(manifest))
    for name in PAPERS_FILES:
        (out / name).unlink()
    (part,) = sorted((out / "parts").glob("*.jsonl"))
    part.write_text(part.read_text().splitlines(keepends=True)[0])


def test_resumed_run_with_randomisation_equals_an_uninterrupted_one(
    tmp_path, data, weights
) -> None:
    """The randomised copy's draws depend on the batch, not on the process that scores it."""
    out = tmp_path / "out"
    argv = _argv(data, out, weights, "--batch-size", "2", "--metrics", "randomisation")
    assert cli.main(argv) == 0
    expected = {name: (out / name).read_text() for name in PAPERS_FILES}
    assert RANDOMISATION in expected["scores.csv"].splitlines()[0]
    _interrupted_after_one_batch(out)
    assert cli.main(["compare", "-o", str(out), "--resume", "-q", "--workers", "0"]) == 0
    for name, text in expected.items():
        assert (out / name).read_text() == text, name


def test_randomisation_is_defined_under_raw_scores(tmp_path, data, weights) -> None:
    """It compares maps, so ``--scores raw`` keeps it (the perturbation metrics are refused)."""
    out = tmp_path / "out"
    argv = ["--scores", "raw", "--metrics", "randomisation", "--limit", "2"]
    assert cli.main(_argv(data, out, weights, *argv)) == 0
    for row in _rows(out / "scores.csv"):
        assert -1 <= float(row[RANDOMISATION]) <= 1


def _subprocess(command: list[str], threads: bool) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if threads:
        env["OMP_NUM_THREADS"] = "1"
    else:
        env.pop("OMP_NUM_THREADS", None)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow  # torchrun and three interpreters start: about 30 s on 2 cores
def test_two_gloo_processes_equal_one_process_with_chosen_metrics(tmp_path, data, weights):
    """``--metrics deletion,randomisation`` under ``torchrun`` (two processes, one thread
    each) gives byte-equal tables to one process with ``--threads 1``: each batch draws its
    randomised copy from the run's seed and its first position, whichever process scores it."""
    chosen = ["--metrics", "deletion,randomisation", "--batch-size", "2", "--seed", "5"]
    out, single = tmp_path / "torchrun", tmp_path / "single"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    _subprocess([*torchrun, "-m", "camplus_app", *_argv(data, out, weights, *chosen)], True)
    one = [sys.executable, "-m", "camplus_app", *_argv(data, single, weights, *chosen)]
    _subprocess([*one, "--threads", "1"], False)
    assert read_manifest(out)["summary"]["processes"] == 2
    for name in PAPERS_FILES:
        assert (out / name).read_text() == (single / name).read_text(), name
    assert RANDOMISATION in (single / "scores.csv").read_text()


def test_randomisation_without_layers_above_is_a_usage_error() -> None:
    """A CAM layer with no layer with parameters after it leaves nothing to re-initialise: the
    run is refused by name before anything is scored."""
    from types import SimpleNamespace

    from camplus_app.commands.compare.job import _check_layers_above
    from tests.conftest import Net

    model = Net()
    with pytest.raises(errors.UsageError, match="--metrics randomisation: no layer with para"):
        _check_layers_above(SimpleNamespace(model=model, layer=model.fc))  # type: ignore[arg-type]
    _check_layers_above(SimpleNamespace(model=model, layer=model.conv))  # type: ignore[arg-type]
