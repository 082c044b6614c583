"""Smoke run of the benchmark script, and checks of its reference formulas and its meters.

No timing is asserted: only that every row is there with finite numbers, that the float64
references are the papers' formulas, and that the memory meter sees an allocation it is shown.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from captum_camplus import DEFAULT_METHODS

pytest.importorskip("torchvision")
from benchmarks import run as bench  # noqa: E402

#: The rows with a float64 reference: the methods the reference has a formula for, and all of them
#: from one pass.
WITH_FORMULA = {*bench.ref.FORMULAS, bench.ALL_FOUR}

EXPECTED_ROWS = [
    bench.FLOOR,
    *DEFAULT_METHODS,  # the default methods (a new default one included)
    bench.ALL_FOUR,
    "Captum LayerGradCam",
    "pytorch-grad-cam GradCAM",
    "pytorch-grad-cam GradCAMPlusPlus",
    "pytorch-grad-cam HiResCAM",
    "torchcam GradCAMpp",
]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    pytest.importorskip("pytorch_grad_cam")
    pytest.importorskip("torchcam")
    out = tmp_path_factory.mktemp("bench") / "result.json"
    argv = ["--model", "resnet18", "--batch", "2", "--size", "64", "--threads", "1"]
    rows = bench.main([*argv, "--quick", "--json", str(out)])
    return rows, json.loads(out.read_text())


def test_quick_run_has_every_row_with_finite_numbers(smoke, capsys):
    rows, saved = smoke
    assert [row.name for row in rows] == EXPECTED_ROWS
    assert [row["name"] for row in saved["rows"]] == EXPECTED_ROWS
    for row in rows:
        assert math.isfinite(row.median_ms) and row.median_ms > 0, row.name
        assert math.isfinite(row.ratio_to_floor), row.name
        assert math.isfinite(row.peak_extra_mib), row.name
        if row.name != bench.FLOOR and row.name in WITH_FORMULA:
            assert math.isfinite(row.max_dev_raw) and math.isfinite(row.max_dev_minmax), row.name
        if row.library == "captum-camplus":
            assert math.isfinite(row.map_ms) and row.map_ms > 0, row.name
    assert {t["target"] for t in saved["targets"]} >= {"Grad-CAM <= 1.10x floor"}
    metric_rows = {row["name"]: row for row in saved["metric_rows"]}
    assert set(metric_rows) == {
        "metrics.evaluate_methods",
        "metrics.AverageDrop in Quantus",
        "pytorch-grad-cam DropInConfidence",
    }
    for row in metric_rows.values():
        assert math.isfinite(row["ms_per_image"]) and math.isfinite(row["ratio_to_floor"])


def test_quick_run_counts_the_forward_passes_of_each_metric_evaluation(smoke):
    metric_rows = {row["name"]: row for row in smoke[1]["metric_rows"]}
    # one CAM pass for all four methods that also gives Y, then O for each method's map
    assert metric_rows["metrics.evaluate_methods"]["forwards_per_image"] == 1 + len(DEFAULT_METHODS)
    # Quantus: the CAM pass of explain_func, then Y and O
    assert metric_rows["metrics.AverageDrop in Quantus"]["forwards_per_image"] == 3


def test_quick_run_accuracy_column_separates_exact_from_eps_formulas(smoke):
    rows = {row.name: row for row in smoke[0]}
    for name in ["Grad-CAM", "Grad-CAM+", "Grad-CAM++", "HiResCAM", bench.ALL_FOUR]:
        assert rows[name].max_dev_raw < 1e-4, name  # float32 against float64: rounding only
    # torchcam keeps alpha = g^2, so its raw scale is off by orders of magnitude (NOTES.md 4)
    assert rows["torchcam GradCAMpp"].max_dev_raw > 0.5


def test_reference_maps_follow_the_papers_by_hand():
    # one image, two channels, three positions (1 x 3 maps); gradients chosen by hand
    a = torch.tensor([[[[1.0, 2.0, 0.0]], [[0.5, 0.0, 1.5]]]], dtype=torch.float64)
    g = torch.tensor([[[[0.5, -1.0, 0.0]], [[1.0, 2.0, -0.5]]]], dtype=torch.float64)
    maps = bench.reference_maps(a, g)
    # Grad-CAM: w = (-1/6, 5/6); map = w0 A0 + w1 A1 = (1/4, -1/3, 5/4) -> ReLU
    assert torch.allclose(maps["Grad-CAM"][0, 0], torch.tensor([0.25, 0.0, 1.25]).double())
    # Grad-CAM+: w = (1/6, 1); map = (1/6 + 1/2, 1/3, 3/2)
    assert torch.allclose(maps["Grad-CAM+"][0, 0], torch.tensor([2 / 3, 1 / 3, 1.5]).double())
    # Grad-CAM++ eq. 9: S = (3, 2); alpha = 1 / (2 + S g) where g != 0:
    # channel 0: g=0.5 -> 1/3.5, g=-1 -> 1/(2-3) = -1 (times ReLU(g) = 0), g=0 -> 0
    # channel 1: g=1 -> 1/4, g=2 -> 1/6, g=-0.5 -> 1/1; w = (0.5/3.5, 1/4 + 2/6)
    w0, w1 = 0.5 / 3.5, 0.25 + 2 / 6
    expected = torch.tensor([w0 * 1 + w1 * 0.5, w0 * 2, w1 * 1.5]).double()
    assert torch.allclose(maps["Grad-CAM++"][0, 0], expected)
    # HiResCAM: sum_k g A = (0.5 + 0.5, -2 + 0, 0 - 0.75) -> ReLU
    assert torch.allclose(maps["HiResCAM"][0, 0], torch.tensor([1.0, 0.0, 0.0]).double())


def test_clamped_grad_cam_pp_reference_differs_from_eq_9_only_below_the_clamp():
    a = torch.tensor([[[[1.0, 2.0, 0.0]], [[-2.0, 0.5, 0.5]]]], dtype=torch.float64)
    g = torch.tensor([[[[0.5, -1.0, 0.0]], [[1.0, 1.5, -0.5]]]], dtype=torch.float64)
    maps = bench.reference_maps(a, g)
    # channel 0: S = 3 > 0, alphas as eq. 9: w0 = 0.5 / 3.5
    # channel 1: S = -1, 2 + S g = 1 and 0.5: eq. 9 alphas 1 and 2, clamped ones 1/2 and 1/2
    w0 = 0.5 / 3.5
    for key, w1 in ((bench.ref.CLAMPED_PP, 0.5 * 1 + 0.5 * 1.5), ("Grad-CAM++", 1 * 1 + 2 * 1.5)):
        expected = torch.tensor([w0 * 1 + w1 * -2, w0 * 2 + w1 * 0.5, w1 * 0.5]).double()
        assert torch.allclose(maps[key][0, 0], torch.relu(expected)), key


def test_quick_run_on_a_vision_transformer_with_peers_that_read_tokens():
    pytest.importorskip("pytorch_grad_cam")
    pytest.importorskip("timm")
    argv = ["--model", "vit_small", "--batch", "2", "--size", "64", "--threads", "1", "--quick"]
    rows = {row.name: row for row in bench.main(argv)}
    assert "Captum LayerGradCam" not in rows and "torchcam GradCAMpp" not in rows
    for name in ["Grad-CAM", "Grad-CAM+", "Grad-CAM++", "HiResCAM", bench.ALL_FOUR]:
        assert rows[name].max_dev_raw < 1e-4, name
    for peer in ["GradCAM", "HiResCAM"]:  # with reshape_transform: the same maps
        assert rows[f"pytorch-grad-cam {peer}"].max_dev_minmax < 1e-4, peer


def test_deviations_are_relative_to_the_reference_max_and_after_min_max():
    ref = torch.tensor([[[0.0, 2.0], [1.0, 4.0]]], dtype=torch.float64)
    cam = ref.clone()
    cam[0, 0, 1] = 3.0  # off by 1 where the reference max is 4
    raw, normalised = bench.deviations({"Grad-CAM": cam.float()}, {"Grad-CAM": ref})
    assert raw == pytest.approx(0.25)
    assert normalised == pytest.approx(0.25)  # min-max: 3/4 against 2/4
    raw, normalised = bench.deviations({"Grad-CAM": 10 * ref}, {"Grad-CAM": ref})
    assert raw == pytest.approx(9.0) and normalised == 0.0  # a scale error only shows raw
    zero = torch.zeros_like(ref)
    assert bench.deviations({"Grad-CAM": zero}, {"Grad-CAM": zero}) == (0.0, 0.0)
    assert bench.deviations({"Grad-CAM": ref}, {"Grad-CAM": zero})[0] == math.inf


@pytest.mark.skipif(not bench.rss_available(), reason="needs Linux /proc RSS counters")
def test_peak_memory_meter_sees_a_temporary_allocation():
    model = torch.nn.Conv2d(1, 1, 1)
    case = bench.Case(model, model, torch.zeros(1, 1, 1, 1), torch.zeros(1, dtype=torch.long))

    def allocate(case):
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, freed before the call returns
        return float(block[-1])

    impl = bench.Implementation("alloc", "-", allocate, lambda case: {})
    bench.return_freed_memory_to_the_os()
    assert 60 < bench.peak_extra_mib(impl, case) < 80


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        bench.parse_args(["--batch", "0"])
    with pytest.raises(ValueError, match="unknown model"):
        bench.build_case("vgg", 1, 32, "cpu", 0)


def test_interquartile_range():
    assert bench.interquartile_range([5.0, 1.0, 3.0, 2.0, 4.0]) == pytest.approx(2.0)
    assert bench.interquartile_range([7.0]) == 0.0
