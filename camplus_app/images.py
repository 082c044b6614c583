"""Images to explain: the photographs that ship with scikit-image, scikit-learn and matplotlib,
or the user's own files and folders. Everything is read from local disk.

>>> images = sample_images()                      # {"chelsea": <PIL.Image>, ...}
>>> images = load_images(["cat.jpg", "photos/"])  # files, and the images inside folders
>>> images = resolve_images(["cat.jpg", "coffee"])  # files, folders or bundled names
>>> named = name_images(["cat.jpg", "coffee"])  # the same, not decoded: (name, file or key)

Every image becomes the 8-bit RGB picture a viewer shows (:func:`to_rgb`): EXIF orientation
applied, 16-bit images scaled by their range (not clipped), transparency composited over white.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL.Image import Image

#: File name endings read from folders (a file named explicitly may have any ending): the
#: formats Pillow decodes without extra software.
IMAGE_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
    ".tga",
)


def _skimage(name: str) -> Callable[[], Image]:
    def load() -> Image:
        from PIL import Image
        from skimage import data

        pixels = getattr(data, name)()
        if name == "stereo_motorcycle":  # (left, right, disparity): the left view
            pixels = pixels[0]
        return Image.fromarray(pixels).convert("RGB")

    return load


def _sklearn(file_name: str) -> Callable[[], Image]:
    def load() -> Image:
        from PIL import Image
        from sklearn.datasets import load_sample_image

        return Image.fromarray(load_sample_image(file_name)).convert("RGB")

    return load


def _matplotlib(file_name: str) -> Callable[[], Image]:
    def load() -> Image:
        from matplotlib import cbook
        from PIL import Image

        with Image.open(cbook.get_sample_data(file_name, asfileobj=False)) as opened:
            return opened.convert("RGB")

    return load


#: The default image set by name. "camera" is the one grayscale photograph, given to the model as
#: RGB (three equal channels): a classic test image on which ImageNet models are confident.
SAMPLE_IMAGES: dict[str, Callable[[], Image]] = {
    "astronaut": _skimage("astronaut"),
    "camera": _skimage("camera"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "motorcycle": _skimage("stereo_motorcycle"),
    "rocket": _skimage("rocket"),
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
    "grace_hopper": _matplotlib("grace_hopper.jpg"),
}


#: Integer modes holding 16-bit samples (Pillow opens 16-bit PNG, TIFF and PGM files so).
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
#: What transparent pixels are shown over, as most viewers and browsers do.
BACKGROUND = (255, 255, 255)


def to_rgb(image: Image) -> Image:
    """The 8-bit RGB picture a viewer shows for a PIL image of any mode, or a clear error.

    - EXIF orientation is applied (a phone photo stored sideways is shown upright).
    - 16-bit grayscale (``I;16*``, and ``I`` with values in [0, 65535], as Pillow opens 16-bit
      files) is scaled by the 16-bit range: 65535 is white. Pillow's own conversion clips every
      value above 255 to white.
    - 32-bit float (``F``) is taken in [0, 1], the float convention of scikit-image, matplotlib
      and torchvision; other values have no implied display range and raise ``ValueError``.
    - Transparency (``RGBA``, ``LA``, ``PA``, a palette or colour key with transparency) is
      composited over white, :data:`BACKGROUND`.
    - Everything else (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``...) goes
      through Pillow's conversion.

    Raises:
        ValueError: a float image outside [0, 1], a 32-bit integer image outside [0, 65535], or
            a mode Pillow cannot convert.
    """
    from PIL import Image as PILImage
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in _SIXTEEN_BIT:
        return _gray(_scaled(np.asarray(image), 65535, "an integer", mode))
    if mode == "F":
        return _gray(_scaled(np.asarray(image), 1, "a float", mode))
    try:
        if "A" in mode or "a" in mode or "transparency" in image.info:
            rgba = image.convert("LA").convert("RGBA") if mode == "La" else image.convert("RGBA")
            background = PILImage.new("RGBA", rgba.size, (*BACKGROUND, 255))
            return PILImage.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")
    except ValueError as error:
        raise ValueError(f"cannot show an image of mode {mode!r} as RGB ({error})") from error


#: The most elongated image accepted (long side / short side). The model sees a square crop
#: after its short side is resized to about 256 pixels, so a strip shows it almost nothing,
#: while resizing a 10000 x 1 strip alone takes 3.5 GB.
MAX_ASPECT = 100


def check_aspect(image: Image) -> None:
    """Raise ``ValueError`` for an image more than :data:`MAX_ASPECT` times longer than wide."""
    width, height = image.size
    if min(width, height) == 0 or max(width, height) > MAX_ASPECT * min(width, height):
        raise ValueError(
            f"image of {width} x {height} pixels is too elongated to classify (more than "
            f"{MAX_ASPECT}:1): the model sees a square crop after resizing its short side"
        )


def _scaled(values: np.ndarray, top: float, kind: str, mode: str) -> np.ndarray:
    """``values`` in [0, top] as 8-bit, ``255 * value / top`` rounded; ValueError outside."""
    if values.size and not (np.isfinite(values).all() and 0 <= values.min() <= values.max() <= top):
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        raise ValueError(
            f"{kind} image (mode {mode}) with values in [{low:.4g}, {high:.4g}]: only [0, "
            f"{top:g}] has a display range ({top:g} is white); rescale it first"
        )
    return np.rint(values.astype(np.float64) * (255 / top)).astype(np.uint8)


def _gray(pixels: np.ndarray) -> Image:
    from PIL import Image as PILImage

    return PILImage.fromarray(pixels, mode="L").convert("RGB")


def sample_images(names: Iterable[str] | None = None) -> dict[str, Image]:
    """The bundled photographs as RGB PIL images, by name (default: all of :data:`SAMPLE_IMAGES`).

    Raises:
        ValueError: an unknown name.
        ImportError: scikit-image, scikit-learn or matplotlib is missing.
    """
    names = list(SAMPLE_IMAGES) if names is None else list(names)
    unknown = [name for name in names if name not in SAMPLE_IMAGES]
    if unknown:
        raise ValueError(f"unknown sample images {unknown}; choose from {', '.join(SAMPLE_IMAGES)}")
    try:
        return {name: SAMPLE_IMAGES[name]() for name in names}
    except ImportError as error:
        raise ImportError(
            f"the sample images need scikit-image, scikit-learn and matplotlib ({error}): "
            'pip install "captum-camplus[demo]"'
        ) from error


def image_files(paths: Sequence[str | Path]) -> list[Path]:
    """The image files named by ``paths``: files as given, folders by :data:`IMAGE_SUFFIXES`.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: no paths, or a folder without images.
    """
    if not paths:
        raise ValueError("no image paths given")
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"folder {path} has no image files ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"image not found: {path}")
    return files


def load_images(paths: Sequence[str | Path]) -> dict[str, Image]:
    """Read image files and folders into RGB PIL images, keyed by a unique name (the file stem).

    Every file is decoded here, so a file that is not an image fails before any work starts.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a file that is not a readable image (:class:`UnreadableImage`), or a
            folder without images.
    """
    images: dict[str, Image] = {}
    for file in image_files(paths):
        images[unique_name(file.stem, images)] = read_image(file)
    return images


class UnreadableImage(ValueError):
    """A file that cannot be decoded into the picture a viewer shows; the message names it."""


def read_image(path: str | Path) -> Image:
    """Decode one image file into an RGB PIL image, as a viewer shows it (:func:`to_rgb`).

    Raises:
        UnreadableImage: a file that is not a readable image, naming the file: what Pillow
            raises for a file it cannot decode (``OSError``, which a truncated file gives,
            ``UnidentifiedImageError``, ``DecompressionBombError``, and the ``SyntaxError`` and
            ``EOFError`` of a broken file), and :func:`to_rgb`'s ``ValueError``.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            return to_rgb(opened)
    except Image.DecompressionBombError as error:
        raise UnreadableImage(
            f"image too large: {path} ({error}); Pillow refuses images of more than twice "
            f"Image.MAX_IMAGE_PIXELS ({Image.MAX_IMAGE_PIXELS}) pixels"
        ) from error
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError) as error:
        raise UnreadableImage(f"not a readable image: {path} ({error})") from error
    except ValueError as error:
        raise UnreadableImage(f"{path}: {error}") from error


def name_images(arguments: Sequence[str | Path]) -> list[tuple[str, Path | str]]:
    """The images named on a command line, not decoded: ``(unique name, source)`` where the
    source is a file, or the key of a bundled photograph.

    A path that exists wins over a bundled name; a folder gives its image files; no argument
    means every bundled photograph. Errors as in :func:`image_files`.
    """
    if not arguments:
        return [(name, name) for name in SAMPLE_IMAGES]
    named: list[tuple[str, Path | str]] = []
    taken: set[str] = set()
    for argument in arguments:
        if not Path(argument).exists() and str(argument) in SAMPLE_IMAGES:
            found: list[tuple[str, Path | str]] = [(str(argument), str(argument))]
        else:
            found = [(file.stem, file) for file in image_files([argument])]
        for name, source in found:
            name = unique_name(name, taken)
            taken.add(name)
            named.append((name, source))
    return named


def resolve_images(arguments: Sequence[str | Path]) -> dict[str, Image]:
    """Images named on a command line (:func:`name_images`), decoded.

    Errors as in :func:`load_images`.
    """
    return {
        name: read_image(source) if isinstance(source, Path) else SAMPLE_IMAGES[source]()
        for name, source in name_images(arguments)
    }


def unique_name(name: str, taken: Iterable[str]) -> str:
    """``name``, or ``name-2``, ``name-3``... if it is taken."""
    taken = set(taken)
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        candidate = f"{name}-{number}"
    return candidate
