"""Write a labelled class-folder data set of any size from the bundled photographs.

    python -m benchmarks.make_dataset OUT --images 1000 [--seed 0] [--size 256]

Image ``i`` is a random crop (30-100 % of the photograph's area, aspect ratio 3:4 to 4:3) of one
of the nine bundled photographs, taken in turn, flipped left-right half of the time, with colour
jitter (brightness, contrast and saturation each within 25 %), resized to ``size`` x ``size``
and saved as a JPEG in the folder of its class: the ImageNet synset id (``n07920052``...) of the
class the bundled EfficientNet-Lite0 predicts for the whole photograph. The same seed writes the
same files. ``camplus compare OUT`` then reads it as a data set with true labels.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

#: Quality of the JPEG files written.
JPEG_QUALITY = 90


def photo_classes() -> dict[str, str]:
    """Bundled photograph name -> the synset id of the bundled model's class for it."""
    from camplus_app.datasets import imagenet_synsets
    from camplus_app.images import sample_images
    from camplus_app.zoo import efficientnet_lite0

    clf = efficientnet_lite0()
    photos = sample_images()
    predicted = clf.predict(clf.preprocess(list(photos.values()))).indices.tolist()
    synsets = imagenet_synsets()
    return {name: synsets[c] for name, c in zip(photos, predicted, strict=True)}


def write_dataset(
    out: Path, images: int, folders: Mapping[str, str], seed: int = 0, size: int = 256
) -> list[Path]:
    """Write ``images`` augmented photographs into ``out/<folders[photo]>/``.

    Args:
        folders: Bundled photograph name -> its class folder's name (several photographs may
            share a folder).

    Returns:
        The files written, in order.
    """
    from torchvision import transforms

    from camplus_app.images import sample_images

    if images < 1:
        raise ValueError(f"images must be positive, got {images}")
    photos = sample_images(list(folders))
    augment = transforms.Compose(
        [
            transforms.RandomResizedCrop(size, scale=(0.3, 1.0), ratio=(3 / 4, 4 / 3)),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25),
        ]
    )
    torch.manual_seed(seed)  # torchvision's random transforms draw from torch's generator
    names = list(photos)
    written = []
    for i in range(images):
        name = names[i % len(names)]
        folder = out / folders[name]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}_{i:06d}.jpg"
        augment(photos[name]).save(path, format="JPEG", quality=JPEG_QUALITY)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.make_dataset", description=__doc__)
    parser.add_argument("out", type=Path, help="new folder to write the class folders into")
    parser.add_argument("--images", type=int, default=1000, help="default: 1000")
    parser.add_argument("--seed", type=int, default=0, help="default: 0")
    parser.add_argument("--size", type=int, default=256, help="side in pixels (default: 256)")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty")
    folders = photo_classes()
    files = write_dataset(args.out, args.images, folders, args.seed, args.size)
    print(f"{len(files)} images in {len(set(folders.values()))} class folders under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
