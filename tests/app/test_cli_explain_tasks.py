"""``camplus explain`` on a torchvision segmentation model and a detector (issue 23), with
random weights saved as local state dicts: nothing is downloaded.

The heads' biases are set so that the predictions are known: the segmenter predicts class 2
everywhere, the detector scores class 1 about 0.995 on every box. The maps are compared with
Captum's own ``LayerGradCam`` through the same wrappers.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

torchvision = pytest.importorskip("torchvision")
pytest.importorskip("matplotlib")
from captum.attr import LayerGradCam  # noqa: E402
from PIL import Image  # noqa: E402

from camplus_app import cli, errors, figures, task_models  # noqa: E402
from camplus_app.commands import explain_tasks  # noqa: E402
from captum_camplus.maps import normalize_maps  # noqa: E402
from captum_camplus.targets import DetectionScores, SegmentationScores  # noqa: E402

SEGMENTER = "lraspp_mobilenet_v3_large"
DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Weights of a segmenter that predicts class 2 and of a detector that finds class 1, and
    a non-square RGB, a grayscale and an RGBA image."""
    from torchvision import models

    folder = tmp_path_factory.mktemp("explain_tasks")
    torch.manual_seed(0)
    seg = models.get_model(SEGMENTER, weights=None, weights_backbone=None, num_classes=3)
    with torch.no_grad():
        seg.classifier.high_classifier.bias.copy_(torch.tensor([0.0, 0.0, 4.0]))
    torch.save(seg.state_dict(), folder / "seg.pt")
    det = models.get_model(DETECTOR, weights=None, weights_backbone=None, num_classes=3)
    with torch.no_grad():
        det.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([0.0, 6.0, 0.0]))
    torch.save(det.state_dict(), folder / "det.pt")
    noise = torch.Generator().manual_seed(1)

    def picture(channels: int, height: int, width: int) -> torch.Tensor:
        shape = (height, width, channels) if channels > 1 else (height, width)
        return torch.randint(0, 256, shape, generator=noise, dtype=torch.uint8)

    Image.fromarray(picture(3, 48, 80).numpy()).save(folder / "wide.png")
    Image.fromarray(picture(1, 40, 64).numpy(), mode="L").save(folder / "gray.png")
    Image.fromarray(picture(4, 60, 40).numpy(), mode="RGBA").save(folder / "tall.png")
    return {p.stem: p for p in folder.iterdir()}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def _explain(files: dict[str, Path], model: str, out: Path, *options: str) -> int:
    weights = files["seg" if model == SEGMENTER else "det"]
    argv = ["explain", *options, "--model", model, "--weights", str(weights), "-o", str(out)]
    return cli.main([*argv, "--quiet"])


def _captum_grad_cam(wrapper: torch.nn.Module, layer: torch.nn.Module, x, target) -> torch.Tensor:
    return LayerGradCam(wrapper, layer).attribute(x, target=target, relu_attributions=True)


def test_segmentation_explains_the_predicted_region(files, tmp_path, figure_calls) -> None:
    drawn = figure_calls("overlay_figure")
    out = tmp_path / "out"
    assert _explain(files, SEGMENTER, out, str(files["wide"]), "--methods", "Grad-CAM") == 0
    rows = {row["image"]: row for row in _rows(out / "predictions.csv")}
    assert rows["wide"]["class_index"] == "2" and rows["wide"]["region"] == "its predicted pixels"
    assert float(rows["wide"]["region_share"]) == 1.0
    settings = json.loads((out / "manifest.json").read_text())["settings"]
    assert (settings["task"], settings["layer"]) == ("segmentation", "backbone.16")
    image, heatmaps, title = drawn["wide"]
    assert image.shape == (3, 48, 80)  # the user's image at its own size, not the model's
    assert "class 2 over its predicted pixels" in title
    assert heatmaps["Grad-CAM"].shape == (1, 48, 80)
    # the same map from Captum through SegmentationScores with the predicted region
    seg = task_models.load_segmenter(SEGMENTER, files["seg"])
    x = seg.preprocess(Image.open(files["wide"]))
    assert x.shape[-2:] == (520, 866)  # the short side at torchvision's 520, aspect kept
    with torch.no_grad():
        mask = seg.model(x)["out"].argmax(dim=1) == 2
    expected = _captum_grad_cam(SegmentationScores(seg.model, mask=mask), seg.layer, x, 2)
    expected = normalize_maps(F.interpolate(expected.double(), (48, 80), mode="bilinear"))
    torch.testing.assert_close(heatmaps["Grad-CAM"][None].double(), expected, atol=1e-5, rtol=0)


def test_a_class_predicted_nowhere_is_explained_over_the_whole_image(files, tmp_path) -> None:
    out = tmp_path / "out"
    options = ["--class", "class 1", "--methods", "HiResCAM"]
    assert _explain(files, SEGMENTER, out, str(files["gray"]), *options) == 0
    (row,) = _rows(out / "predictions.csv")  # a grayscale image, read as RGB
    assert row["class_index"] == "1" and row["region"].startswith("the whole image")
    assert float(row["region_share"]) == 1.0 and 0 < float(row["mean_probability"]) < 0.1


def test_region_of_skips_the_background() -> None:
    logits = torch.zeros(1, 3, 2, 3)
    logits[0, 0, :, :2] = 5  # background on 4 pixels, class 1 on 2 (ties: lowest index)
    logits[0, 1, :, 2] = 5
    k, mask, region = explain_tasks.region_of(logits, None, ["background", "a", "b"])
    assert k == 1 and mask.sum() == 2 and region == "its predicted pixels"
    logits[0, 1] = 0  # all background: the background is explained
    k, mask, _ = explain_tasks.region_of(logits, None, ["background", "a", "b"])
    assert k == 0 and bool(mask.all())


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("3", "class index 3 is out of range: lraspp_mobilenet_v3_large has 3 classes (0 to 2)"),
        ("dog", "unknown class 'dog' for lraspp_mobilenet_v3_large"),
    ],
)
def test_a_class_that_is_not_one_is_refused(files, tmp_path, capsys, value, message) -> None:
    out = tmp_path / "out"
    status = _explain(files, SEGMENTER, out, str(files["wide"]), "--class", value)
    assert status == errors.USAGE_ERROR
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_detection_maps_each_top_box_on_the_image(files, tmp_path, figure_calls) -> None:
    drawn = figure_calls("detection_figure")
    out = tmp_path / "out"
    options = ["--boxes", "2", "--methods", "Grad-CAM,HiResCAM"]
    assert _explain(files, DETECTOR, out, str(files["tall"]), *options) == 0
    rows = _rows(out / "detections.csv")
    assert [(r["image"], r["rank"]) for r in rows] == [("tall", "1"), ("tall", "2")]
    assert {r["class_name"] for r in rows} == {"class 1"}
    assert all(float(r["score"]) >= explain_tasks.DEFAULT_BOX_THRESHOLD for r in rows)
    settings = json.loads((out / "manifest.json").read_text())["settings"]
    assert (settings["layer"], settings["boxes"]) == ("backbone.body.16", 2)
    image, panels, _ = drawn["tall"]
    assert image.shape == (3, 60, 40) and len(panels) == 2  # RGBA read as RGB, own size
    assert panels[0].heatmaps["Grad-CAM"].shape == (1, 60, 40)
    assert panels[0].caption == f"class 1 {float(rows[0]['score']):.2f}"
    # the same map as Captum's LayerGradCam through DetectionScores, brought onto the image
    det = task_models.load_detector(DETECTOR, files["det"])
    det.keep_scores_from(explain_tasks.DEFAULT_BOX_THRESHOLD)
    x = det.preprocess(Image.open(files["tall"]))
    boxes, labels, _ = explain_tasks.top_detections(det, x, None, 2, 0.5)
    torch.testing.assert_close(torch.tensor(panels[1].box), boxes[1])
    wrapper = DetectionScores(det.model, boxes, labels)
    expected = wrapper.image_maps(_captum_grad_cam(wrapper, det.layer, x[None], 1), x[None])
    torch.testing.assert_close(panels[1].heatmaps["Grad-CAM"], expected[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--box-threshold", "0.999"], "no box with"),
        (["--class", "2"], "no box of class 'class 2'"),
    ],
)
def test_a_detector_that_finds_no_box_fails_clearly(files, tmp_path, capsys, options, said):
    out = tmp_path / "out"
    assert _explain(files, DETECTOR, out, str(files["wide"]), *options) == errors.FAILURE
    err = capsys.readouterr().err
    assert said in err and "lower --box-threshold" in err and "(a failure" not in err
    assert not out.exists() or not any(out.iterdir())  # a failed run leaves nothing behind


@pytest.mark.parametrize(
    ("model", "options", "said"),
    [
        (SEGMENTER, ["--boxes", "2"], "--boxes and --box-threshold apply to detectors"),
        (DETECTOR, ["--scores", "raw"], "--scores applies to classifiers"),
        (DETECTOR, ["--class", "0"], "class 0 is the background of fasterrcnn"),
        (None, ["--boxes", "2"], "apply to detectors, not to classifiers"),
        (DETECTOR, ["--layer", "roi_heads.box_head.fc7"], "not an (N, C, H, W) map"),
        (SEGMENTER, ["--layer", "classifier.scale"], "gives (1, 128, 1, 1), not an (N, C, H, W)"),
        (SEGMENTER, ["--layer", "nowhere"], "has no layer named 'nowhere'"),
    ],
)
def test_options_of_another_task_are_refused(files, tmp_path, capsys, model, options, said):
    out = tmp_path / "out"
    if model is None:
        status = cli.main(["explain", "coffee", *options, "-o", str(out), "--quiet"])
    else:
        status = _explain(files, model, out, str(files["wide"]), *options)
    assert status == errors.USAGE_ERROR
    assert said in capsys.readouterr().err


def test_a_segmenter_or_detector_needs_weights(tmp_path, capsys) -> None:
    argv = ["explain", "coffee", "--model", SEGMENTER, "-o", str(tmp_path / "out")]
    assert cli.main(argv) == errors.USAGE_ERROR
    assert "no weights for 'lraspp_mobilenet_v3_large'" in capsys.readouterr().err


def test_task_of_names_the_torchvision_tasks() -> None:
    assert task_models.task_of("torchvision/fcn_resnet50") == "segmentation"
    assert task_models.task_of("retinanet_resnet50_fpn") == "detection"
    assert task_models.task_of("resnet50") is None
    assert task_models.task_of("timm/fcos_resnet50_fpn") is None
    assert task_models.task_of(None) is None


@pytest.mark.parametrize(
    "arch", ["retinanet_resnet50_fpn", "fcos_resnet50_fpn", "ssdlite320_mobilenet_v3_large"]
)
def test_the_class_count_is_read_from_any_detector_head(arch) -> None:
    from torchvision import models

    net = models.get_model(arch, weights=None, weights_backbone=None, num_classes=5)
    assert task_models._detector_classes(net.state_dict()) == 5


@pytest.mark.parametrize(
    ("model", "weights", "said"),
    [
        (DETECTOR, "seg", "the weights have no detection head"),
        (SEGMENTER, "det", "the weights have no segmentation classifier"),
        ("deeplabv3_mobilenet_v3_large", "seg", "do not fit torchvision 'deeplabv3_mobilenet"),
    ],
)
def test_weights_of_another_model_are_refused(files, tmp_path, capsys, model, weights, said):
    argv = ["explain", str(files["wide"]), "--model", model, "--weights", str(files[weights])]
    assert cli.main([*argv, "-o", str(tmp_path / "out")]) == errors.USAGE_ERROR
    assert said in capsys.readouterr().err


def test_the_detection_figure_draws_each_box_on_each_map() -> None:
    from matplotlib.patches import Rectangle

    image = torch.rand(3, 30, 50)
    heat = torch.rand(1, 30, 50)
    panels = [
        figures.BoxPanel((5.0, 4.0, 20.0, 25.0), "cat 0.91", {"Grad-CAM": heat, "HiResCAM": heat}),
        figures.BoxPanel((30.0, 2.0, 45.0, 9.0), "dog 0.60", {"Grad-CAM": heat, "HiResCAM": heat}),
    ]
    figure = figures.detection_figure(image, panels, "photo")
    grid = [axis for axis in figure.axes if axis.images]  # the colour bar has no image
    assert len(grid) == 4
    for axis, panel in zip(grid, [p for p in panels for _ in range(2)], strict=True):
        (box,) = [patch for patch in axis.patches if isinstance(patch, Rectangle)]
        x1, y1, x2, y2 = panel.box
        assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (
            x1,
            y1,
            x2 - x1,
            y2 - y1,
        )
        assert [text.get_text() for text in axis.texts] == [panel.caption]
    with pytest.raises(ValueError, match="no detections to draw"):
        figures.detection_figure(image, [], "photo")
    with pytest.raises(ValueError, match="upsample the maps to the image first"):
        small = figures.BoxPanel((0.0, 0.0, 1.0, 1.0), "x", {"Grad-CAM": torch.rand(1, 3, 5)})
        figures.detection_figure(image, [small], "photo")
