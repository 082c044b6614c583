"""``python -m camplus_app.metrics_demo``: score the CAM methods with Quantus on a walled CNN.

A small CNN is trained for a few seconds on synthetic images (no downloads): each image holds two
squares of its class's colour, one in the top part and one in the bottom rows, which a "wall" after
the CAM layer hides from the classifier, as in the masked VGG of Taimeskhanov, Sicre & Garreau
(2024, "CAM-based methods can see through walls", arXiv:2404.01964). The script prints the
``quantus.evaluate`` table of the five metrics and the evaluation driver's tables in the shape of
tables 1-2 of Lerma & Lucas (2022, "Grad-CAM++ is equivalent to Grad-CAM with positive
gradients", arXiv:2205.10838), for maps from pre- and post-softmax gradients.
"""

from __future__ import annotations

import argparse

import pandas as pd
import quantus
import torch
from torch import Tensor, nn

import captum_camplus
from camplus_app.walls.models import WalledCNN
from metrics import (
    AverageDrop,
    DeadZoneMass,
    IncreaseInConfidence,
    RelativePerformance,
    WinPercentage,
    cam_explain,
    evaluate_methods,
)

METHODS = list(captum_camplus.DEFAULT_METHODS)
COLOURS = torch.tensor([[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.2, 0.2, 1.0], [1.0, 1.0, 0.2]])
SIZE = 32
WALL_ROWS = 4  # bottom rows of the 16 x 16 layer map that the classifier cannot see


def walled_cnn(classes: int = len(COLOURS)) -> WalledCNN:
    """conv-relu-pool-conv-relu (the CAM layer), then a ``flatten -> linear`` head walled off
    from the bottom ``WALL_ROWS`` rows of the layer map (:class:`~camplus_app.walls.WalledCNN`)."""
    features = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
    )
    head = nn.Sequential(nn.Flatten(), nn.Linear(32 * (SIZE // 2) ** 2, classes))
    return WalledCNN(features, head, (SIZE, SIZE), in_channels=3, unseen_rows=WALL_ROWS)


def synthetic_images(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Images in [0, 1]: noise, one square of the class colour on top and one at the bottom."""
    labels = torch.randint(len(COLOURS), (n,), generator=generator)
    images = 0.35 * torch.rand(n, 3, SIZE, SIZE, generator=generator)
    for i, label in enumerate(labels.tolist()):
        for first, last in ((0, 14), (24, SIZE - 7)):  # range of the first row of each square
            r = int(torch.randint(first, last + 1, (1,), generator=generator))
            c = int(torch.randint(0, SIZE - 7, (1,), generator=generator))
            images[i, :, r : r + 7, c : c + 7] = COLOURS[label, :, None, None]
    return images, labels


def train(model: nn.Module, generator: torch.Generator, steps: int = 80) -> None:
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        images, labels = synthetic_images(64, generator)
        loss = nn.functional.cross_entropy(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()


def quantus_table(
    model: WalledCNN, images: Tensor, labels: Tensor, threshold: float | None
) -> pd.DataFrame:
    """The ``quantus.evaluate`` table: one column per method, one row per metric."""
    return quantus.evaluate(
        metrics={
            "Average Drop %": AverageDrop(threshold=threshold),
            "Increase in Confidence %": IncreaseInConfidence(threshold=threshold),
            "Win %": WinPercentage(against=METHODS, threshold=threshold),
            "Relative Performance vs Grad-CAM": RelativePerformance(
                "Grad-CAM", threshold=threshold
            ),
            "Dead Zone Mass": DeadZoneMass(unseen=model.dead_zone(), threshold=threshold),
        },
        xai_methods=dict.fromkeys(METHODS, cam_explain),
        model=model,  # type: ignore[arg-type]  # Quantus wraps an nn.Module; its hint names its wrapper
        x_batch=images.numpy(),
        y_batch=labels.numpy(),
        explain_func_kwargs={"layer": model.cam_layer},
        agg_func=lambda scores: scores[0],
        return_as_df=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="test images (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="keep images with softmax above (Lerma & Lucas: 0.5)",
    )
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model = walled_cnn()
    train(model, generator)
    images, labels = synthetic_images(args.images, generator)
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).double().mean().item()
    print(f"walled CNN on synthetic squares: test accuracy {accuracy:.0%} on {args.images} images")
    unseen = model.dead_zone()
    print(f"unseen region: image rows {unseen.nonzero()[:, 0].min()}-{SIZE - 1}\n")

    with pd.option_context("display.float_format", "{:.4g}".format, "display.width", 120):
        print("quantus.evaluate (maps from pre-softmax gradients, softmax scores):")
        print(quantus_table(model, images, labels, args.threshold), end="\n\n")
    result = evaluate_methods(
        model,
        model.cam_layer,
        images,
        labels=labels,
        threshold=args.threshold,
        unseen=unseen,
        progress=False,
    )
    print("metrics.evaluate_methods:", result, sep="\n")


if __name__ == "__main__":
    main()
