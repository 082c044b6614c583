"""The default image set and reading the user's images."""

from __future__ import annotations

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
pytest.importorskip("skimage")
pytest.importorskip("sklearn")
from PIL import Image  # noqa: E402

from camplus_app import images as data  # noqa: E402


def _save(path, colour=(200, 10, 10), size=(40, 30)) -> None:
    Image.new("RGB", size, colour).save(path, format="PNG")


def test_sample_images_are_rgb_photographs() -> None:
    images = data.sample_images()
    assert list(images) == list(data.SAMPLE_IMAGES)
    assert {"chelsea", "coffee", "astronaut", "rocket", "motorcycle", "china", "flower"} <= set(
        images
    )
    for name, image in images.items():
        assert image.mode == "RGB", name
        assert min(image.size) >= 200, name
    from skimage import data as skdata

    np.testing.assert_array_equal(np.asarray(images["chelsea"]), skdata.chelsea())
    camera = np.asarray(images["camera"])  # grayscale photograph, three equal channels
    np.testing.assert_array_equal(camera[..., 0], skdata.camera())
    np.testing.assert_array_equal(camera[..., 0], camera[..., 2])


def test_sample_images_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"unknown sample images \['lena'\]"):
        data.sample_images(["chelsea", "lena"])


def test_load_images_files_and_folders(tmp_path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    _save(folder / "b.png", (0, 255, 0))
    _save(folder / "a.JPG")
    (folder / "notes.txt").write_text("skipped: not an image suffix")
    gray = tmp_path / "a.png"
    Image.new("L", (20, 20), 128).save(gray)
    images = data.load_images([folder, gray])
    assert list(images) == ["a", "b", "a-2"]  # folder sorted, then the file; names made unique
    assert all(image.mode == "RGB" for image in images.values())
    assert np.asarray(images["b"])[0, 0].tolist() == [0, 255, 0]
    assert np.asarray(images["a-2"])[0, 0].tolist() == [128, 128, 128]


def test_load_images_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="image not found: .*missing.png"):
        data.load_images([tmp_path / "missing.png"])
    text = tmp_path / "fake.png"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a readable image: .*fake.png"):
        data.load_images([text])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="folder .*empty has no image files"):
        data.load_images([empty])
    with pytest.raises(ValueError, match="no image paths given"):
        data.load_images([])


def test_resolve_images(tmp_path, monkeypatch) -> None:
    assert list(data.resolve_images([])) == list(data.SAMPLE_IMAGES)
    monkeypatch.chdir(tmp_path)
    _save(tmp_path / "mine.png")
    images = data.resolve_images(["coffee", "mine.png"])
    assert list(images) == ["coffee", "mine"]
    assert images["coffee"].size == (600, 400)
    _save(tmp_path / "coffee", (1, 2, 3))  # an existing path wins over a bundled name
    assert np.asarray(data.resolve_images(["coffee"])["coffee"])[0, 0].tolist() == [1, 2, 3]
    with pytest.raises(FileNotFoundError, match="image not found: nothing"):
        data.resolve_images(["nothing"])


def test_unique_name() -> None:
    assert data.unique_name("a", []) == "a"
    assert data.unique_name("a", ["a", "a-2"]) == "a-3"
