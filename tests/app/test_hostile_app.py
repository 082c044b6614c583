"""Hostile input to the application: images of every mode and the ``camplus`` command.

Every case gets the picture a viewer shows, or one line in our terms naming the problem.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

PIL_Image = pytest.importorskip("PIL.Image")
images_module = pytest.importorskip("camplus_app.images")
to_rgb, load_images = images_module.to_rgb, images_module.load_images
WHITE = 255


def _gray_rgb(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=-1).astype(np.uint8)


RAMP8 = np.arange(0, 256, 5, dtype=np.uint8).reshape(4, 13)  # 8-bit values 0..255


@pytest.mark.parametrize(
    ("suffix", "make"),
    [
        (".png", lambda: PIL_Image.fromarray(RAMP8.astype(np.uint16) * 257)),  # I;16 PNG
        (".tif", lambda: PIL_Image.fromarray(RAMP8.astype(np.uint16) * 257)),  # I;16 TIFF
        (".tif", lambda: PIL_Image.fromarray(RAMP8.astype(np.int32) * 257)),  # I, 16-bit values
        (".tif", lambda: PIL_Image.fromarray(RAMP8.astype(np.float32) / 255)),  # F in [0, 1]
        (".png", lambda: PIL_Image.fromarray(RAMP8)),  # L
        (".png", lambda: PIL_Image.fromarray(RAMP8).convert("P")),  # palette
        (".tif", lambda: PIL_Image.fromarray(_gray_rgb(RAMP8)).convert("CMYK")),
        (".png", lambda: PIL_Image.fromarray(RAMP8).convert("LA")),  # opaque alpha
    ],
)
def test_every_mode_from_a_file_is_the_picture_a_viewer_shows(tmp_path, suffix, make):
    """16-bit and float images are scaled by their range: Pillow's convert would clip to white."""
    image = make()
    path = tmp_path / f"image{suffix}"
    image.save(path)
    (loaded,) = load_images([path]).values()
    assert loaded.mode == "RGB"
    np.testing.assert_allclose(np.asarray(loaded, dtype=float), _gray_rgb(RAMP8), atol=1)


def test_sixteen_bit_is_scaled_not_clipped():
    image = PIL_Image.fromarray(np.array([[0, 1000, 32768, 65535]], dtype=np.uint16))
    assert np.asarray(image.convert("RGB"))[0, :, 0].tolist() == [0, 255, 255, 255]  # Pillow
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == [0, 4, 128, 255]
    for mode in ("I;16B", "I;16L"):
        assert np.asarray(to_rgb(image.convert("I").convert(mode)))[0, :, 0].tolist() == [
            0,
            4,
            128,
            255,
        ]


@pytest.mark.parametrize(
    ("mode", "values", "message"),
    [
        ("F", [[0.0, 1.5]], r"float image \(mode F\) with values in \[0, 1.5\]"),
        ("F", [[-0.5, 0.5]], r"values in \[-0.5, 0.5\]"),
        ("F", [[0.0, float("nan")]], "a float image"),
        ("I", [[0, 70000]], r"integer image \(mode I\) with values in \[0, 7e\+04\]"),
        ("I", [[-1, 5]], "integer image"),
    ],
)
def test_images_without_a_display_range_are_refused(tmp_path, mode, values, message):
    dtype = np.float32 if mode == "F" else np.int32
    image = PIL_Image.fromarray(np.array(values, dtype=dtype))
    with pytest.raises(ValueError, match=message):
        to_rgb(image)
    path = tmp_path / "odd.tif"
    image.save(path)
    with pytest.raises(ValueError, match=r"odd.tif: .*rescale it first"):
        load_images([path])


def test_transparency_is_composited_over_white():
    rgba = PIL_Image.new("RGBA", (3, 1))
    rgba.putdata([(200, 0, 0, 255), (200, 0, 0, 0), (200, 0, 0, 128)])
    got = np.asarray(to_rgb(rgba))[0].tolist()
    half = round(200 * 128 / 255 + WHITE * 127 / 255)
    assert got[0] == [200, 0, 0] and got[1] == [WHITE] * 3
    assert got[2][0] == pytest.approx(half, abs=1) and got[2][1] == pytest.approx(127, abs=1)
    la = PIL_Image.new("LA", (1, 1), (0, 0))  # black, fully transparent
    assert np.asarray(to_rgb(la)).tolist() == [[[WHITE] * 3]]
    assert np.asarray(to_rgb(la.convert("La"))).tolist() == [[[WHITE] * 3]]


def test_palette_and_grayscale_with_a_transparent_colour_key(tmp_path):
    palette = PIL_Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.putdata([0, 1])
    palette.info["transparency"] = 0  # index 0 is transparent
    path = tmp_path / "keyed.png"
    palette.save(path, transparency=0)
    (loaded,) = load_images([path]).values()
    assert np.asarray(loaded)[0].tolist() == [[WHITE] * 3, [10, 200, 30]]
    assert np.asarray(to_rgb(palette.convert("PA")))[0].tolist() == [[WHITE] * 3, [10, 200, 30]]


@pytest.mark.parametrize("mode", ["1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"])
def test_other_modes_go_through_pillow(mode):
    white = PIL_Image.new("RGB", (2, 2), (255, 255, 255))
    converted = white.convert(mode) if mode not in ("LAB",) else PIL_Image.new("LAB", (2, 2))
    if mode == "LAB":
        converted = PIL_Image.new("LAB", (2, 2), (255, 128, 128))
    got = np.asarray(to_rgb(converted))
    assert got.shape == (2, 2, 3) and got.min() >= 254


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo stored sideways with an EXIF rotation is shown upright by viewers."""
    stored = PIL_Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 40, 10))  # red top half as stored
    exif = PIL_Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    stored.save(path, exif=exif, quality=95)
    (shown,) = load_images([path]).values()
    pixels = np.asarray(shown).astype(int)
    assert shown.size == (20, 40)
    assert pixels[20, 15, 0] > 200 and pixels[20, 4, 2] > 200  # red on the right after rotation


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels: Pillow checks the size when opening it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_and_empty_files_are_named(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(30000, 30000))
    with pytest.raises(ValueError, match=r"image too large: .*bomb.png .*MAX_IMAGE_PIXELS"):
        load_images([bomb])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="not a readable image: .*empty.png"):
        load_images([empty])


# --- 3. the application: the camplus command ------------------------------------------------

zoo = pytest.importorskip("camplus_app.zoo")
cli = pytest.importorskip("camplus_app.cli")
errors = pytest.importorskip("camplus_app.errors")
pytest.importorskip("torchvision")


def _tiny_classifier(layer: str | None = None):
    """A 1000-class conv net with the ImageNet names and torchvision's eval transform (64/56)."""
    from collections import OrderedDict

    torch.manual_seed(0)
    net = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, 8, 3, stride=4),
            relu=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            fc=nn.Linear(8, 1000),
        )
    ).eval()
    transform = zoo._eval_transform(64, 56, "bilinear")
    return zoo._classifier("tiny", net, layer or "relu", transform, [0.5] * 3, [0.5] * 3, 1000)


@pytest.fixture
def tiny_model(monkeypatch):
    def load(name=None, weights=None, layer=None):
        if weights is not None:
            return real(name, weights, layer)
        return _tiny_classifier(layer)

    real = zoo.load_classifier
    monkeypatch.setattr(zoo, "load_classifier", load)


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    PIL_Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    ).save(path)
    return path


def _fails(
    argv: list[str], message: str, capsys, out: Path, status: int = errors.USAGE_ERROR
) -> None:
    """One line on stderr naming the problem, the exit status (a usage error's, 2, unless
    told), nothing written."""
    got = cli.main([*argv, "--quiet", "--output", str(out)] if "--output" not in argv else argv)
    err = capsys.readouterr().err
    assert got == status, err
    assert err.count("\n") == 1 and err.startswith("camplus: error: "), err
    assert re.search(message, err), err
    assert not out.exists() or not any(out.iterdir())


def _weights_files(tmp_path: Path) -> dict[str, Path]:
    from torchvision.models import resnet18

    files = {}
    files["random bytes"] = tmp_path / "random.pth"
    files["random bytes"].write_bytes(np.random.default_rng(0).bytes(2000))
    good = tmp_path / "good.pth"
    torch.save(resnet18(num_classes=10).state_dict(), good)
    files["truncated"] = tmp_path / "truncated.pth"
    files["truncated"].write_bytes(good.read_bytes()[:5000])
    files["text"] = tmp_path / "text.pth"
    files["text"].write_text('{"fc.weight": [1, 2]}')
    files["a tensor"] = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), files["a tensor"])
    files["another architecture"] = good
    return files


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("random bytes", "not a torch.save file of tensors"),
        ("truncated", "cannot read weights from .*truncated.pth: the file is damaged"),
        ("text", "not a torch.save file of tensors"),
        ("a tensor", "does not hold a state dict"),
        ("another architecture", r"do not fit torchvision 'resnet50' \(Missing key"),
    ],
)
def test_corrupt_or_foreign_weights(tmp_path, capsys, photo, case, message):
    weights = _weights_files(tmp_path)[case]
    argv = ["explain", str(photo), "--model", "torchvision/resnet50", "--weights", str(weights)]
    _fails(argv, message, capsys, tmp_path / "out")


def test_images_the_command_cannot_use(tmp_path, capsys, tiny_model):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(30000, 30000))
    _fails(["explain", str(bomb)], "image too large", capsys, tmp_path / "out")
    strip = tmp_path / "strip.png"
    PIL_Image.new("RGB", (5000, 2)).save(strip)
    _fails(["explain", str(strip)], "5000 x 2 pixels is too elongated", capsys, tmp_path / "out")
    floats = tmp_path / "floats.tif"
    PIL_Image.fromarray(np.full((8, 8), 7.5, np.float32)).save(floats)
    _fails(["compare", str(floats)], r"values in \[7.5, 7.5\]", capsys, tmp_path / "out")


def test_output_that_cannot_be_created_or_written(tmp_path, capsys, photo, tiny_model):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    _fails(
        ["explain", str(photo), "--output", str(a_file / "sub")],
        "a-file is a file, not a folder",
        capsys,
        a_file / "sub",
    )
    if Path("/proc/self").exists():  # a file system where nothing can be created
        _fails(
            ["explain", str(photo), "--output", "/proc/camplus-out", "-q"],
            "cannot be written",
            capsys,
            Path("/proc/camplus-out"),
        )
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        _fails(["explain", str(photo)], "cannot be written", capsys, locked / "out")


@pytest.mark.parametrize("command", ["explain", "compare"])
@pytest.mark.parametrize("layer", ["fc", "flat"])
def test_a_layer_without_an_image_shaped_output(
    tmp_path, capsys, photo, tiny_model, command, layer
):  # noqa: E501
    _fails(
        [command, str(photo), "--layer", layer],
        r"without spatial dimensions",
        capsys,
        tmp_path / "out",
    )


def test_a_one_by_one_layer_gives_a_flat_heatmap_not_speckle(tmp_path, photo, monkeypatch):
    drawn = {}
    monkeypatch.setattr(zoo, "load_classifier", lambda *a, **k: _tiny_classifier("pool"))
    figures = pytest.importorskip("camplus_app.figures")
    real = figures.overlay_figure

    def spy(image, heatmaps, title):
        drawn.update(heatmaps)
        return real(image, heatmaps, title)

    monkeypatch.setattr(figures, "overlay_figure", spy)
    out = tmp_path / "out"
    assert cli.main(["explain", str(photo), "--quiet", "--output", str(out)]) == 0
    for name, heat in drawn.items():
        assert heat.unique().numel() == 1, name


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("cuda:7", "device 'cuda:7' (is not available|cannot be used)"),
        ("meta", "device 'meta' holds no data"),
        ("xpu", "device 'xpu' (is not available|cannot be used)"),
        ("warp9", "unknown device 'warp9'"),
    ],
)
def test_devices_torch_cannot_use(tmp_path, capsys, photo, tiny_model, device, message):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    if device == "xpu" and hasattr(torch, "xpu") and torch.xpu.is_available():
        pytest.skip("this machine has an XPU")
    _fails(["explain", str(photo), "--device", device], message, capsys, tmp_path / "out")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("cardigan", r"'cardigan' matches 2 classes .*264 \('Cardigan'\), 474 \('cardigan'\)"),
        ("CARDIGAN", "matches 2 classes"),
        ("tabby cat", r"unknown class 'tabby cat' .*closest: 'tabby'"),
        ("-1", "class index -1 is out of range"),
        ("", "unknown class ''"),
    ],
)
def test_class_names_that_match_several_or_none(
    tmp_path, capsys, photo, tiny_model, target, message
):  # noqa: E501
    _fails(["explain", str(photo), "--target", target], message, capsys, tmp_path / "out")


def test_an_unexpected_failure_is_one_line_unless_asked(tmp_path, capsys, photo, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("internal")

    monkeypatch.setattr(zoo, "load_classifier", broken)
    argv = ["explain", str(photo)]
    _fails(argv, "KeyError: 'internal' .*CAMPLUS_TRACEBACK=1", capsys, tmp_path / "out", 1)
    monkeypatch.setenv("CAMPLUS_TRACEBACK", "1")
    assert cli.main([*argv, "--quiet", "--output", str(tmp_path / "out")]) == errors.FAILURE
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "in broken" in err, err
    assert err.endswith(
        "camplus: error: KeyError: 'internal' (a failure; set CAMPLUS_TRACEBACK=1 "
        "to see the traceback)\n"
    )


def test_the_traceback_of_a_usage_error_is_shown_when_asked(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CAMPLUS_TRACEBACK", "1")
    argv = ["explain", str(tmp_path / "missing.png"), "--output", str(tmp_path / "out")]
    assert cli.main(argv) == errors.USAGE_ERROR
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):"), err
    assert "FileNotFoundError" in err and err.endswith("image not found: " + argv[1] + "\n")


def test_sixteen_bit_photograph_gets_the_class_of_the_eight_bit_one(tmp_path):
    """The headline case: Pillow's conversion made a 16-bit PNG all white (a wrong class)."""
    camera = np.asarray(images_module.sample_images(["camera"])["camera"])[..., 0]
    PIL_Image.fromarray(camera).save(tmp_path / "eight.png")
    PIL_Image.fromarray(camera.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    out = tmp_path / "out"
    argv = ["explain", str(tmp_path / "eight.png"), str(tmp_path / "sixteen.png")]
    assert cli.main([*argv, "--methods", "gradcam", "-q", "--output", str(out)]) == 0
    with (out / "predictions.csv").open() as file:
        rows = {row["image"]: row for row in csv.DictReader(file)}
    assert rows["sixteen"]["class_name"] == rows["eight"]["class_name"]
    assert rows["sixteen"]["probability"] == rows["eight"]["probability"]
