"""Table 1 of Taimeskhanov et al. in small: each CAM's dead-zone mass on a masked CNN.

The model (:class:`WallCNN`) cannot see the bottom digit of a stacked pair; the dead-zone mass
``mu`` (Taimeskhanov et al., eq. 7, :func:`metrics.cam_dead_zone_mass`) measures how much of each
method's map lies there anyway, for the predicted class as Taimeskhanov et al., section 3.3 does.

References:
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD,
  arXiv:2404.01964.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from camplus_app.walls.cams import WALL_METHODS, wall_maps
from camplus_app.walls.data import StackedDigits, stack_mix_digits
from camplus_app.walls.models import WallCNN, WalledCNN


@dataclass(frozen=True)
class TrainingReport:
    """How the masked model was trained and how well it does on the test pairs."""

    epochs: int
    seconds: float
    train_accuracy: float
    test_accuracy: float


@dataclass(frozen=True)
class WallsReport:
    """Per-image dead-zone masses of each method, and the model they were measured on.

    Attributes:
        masses: Method name -> ``(N,)`` float64 ``mu`` per test image (Taimeskhanov et al., eq. 7).
        zero_maps: Method name -> number of all-zero maps (their ``mu`` is 0).
        dead_zone: Boolean ``(H, W)``: the input pixels the model cannot see.
        training: The :class:`TrainingReport`.
    """

    masses: dict[str, Tensor]
    zero_maps: dict[str, int]
    dead_zone: Tensor
    training: TrainingReport

    def table(self) -> str:
        """``mu x 100`` mean +- std per method, in the shape of Taimeskhanov et al., table 1."""
        n = len(next(iter(self.masses.values())))
        rows = int(self.dead_zone.any(dim=1).sum())
        lines = [
            "Dead-zone mass mu x 100 (Taimeskhanov et al., eq. 7), masked WallCNN on "
            "STACK-MIX-digits "
            f"({n} test images, bottom {rows} of {self.dead_zone.shape[0]} rows unseen)",
            f"{'methods':<34} {'STACK-MIX-digits (lower is better)':>34} {'all-zero maps':>14}",
        ]
        for name, mass in self.masses.items():
            label = f"{name} (Captum LayerGradCam)" if name == "Grad-CAM" else name
            cell = f"{100 * mass.mean():.1f} ± {100 * mass.std():.1f}"
            lines.append(f"{label:<34} {cell:>34} {self.zero_maps[name]:>14}")
        even = self.dead_zone.double().mean().sqrt()
        lines.append(f"(a map spread evenly over the image scores {100 * even:.1f})")
        t = self.training
        lines.append(
            f"model: {t.epochs} epochs in {t.seconds:.1f} s on CPU, test accuracy "
            f"{100 * t.test_accuracy:.1f}% (train {100 * t.train_accuracy:.1f}%)"
        )
        return "\n".join(lines)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)`` (None: leave it), then restore."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_wall_cnn(
    epochs: int = 10,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
) -> tuple[WallCNN, TrainingReport]:
    """Train a :class:`WallCNN` on the STACK-MIX-digits training pairs from a fixed seed.

    Each epoch draws new same-class partners for the bottom half (which the model cannot see
    anyway). Adam with weight decay; the walled-off weights stay exactly zero throughout. The
    result is reproducible for a given number of torch threads (:func:`run_walls` uses one).
    """
    torch.manual_seed(seed)
    model = WallCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        train = stack_mix_digits("train", seed=seed * 10_000 + epoch)
        order = torch.randperm(len(train), generator=generator)
        for batch in order.split(batch_size):
            optimizer.zero_grad()
            loss_fn(model(train.images[batch]), train.labels[batch]).backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    model.eval()
    report = TrainingReport(
        epochs=epochs,
        seconds=seconds,
        train_accuracy=accuracy(model, stack_mix_digits("train", seed=seed)),
        test_accuracy=accuracy(model, stack_mix_digits("test", seed=seed)),
    )
    return model, report


@torch.no_grad()
def accuracy(model: nn.Module, data: StackedDigits) -> float:
    """Share of the pairs whose class the model predicts."""
    return float((model(data.images).argmax(dim=1) == data.labels).double().mean())


def dead_zone_masses(
    model: WalledCNN, images: Tensor, batch_size: int = 256
) -> tuple[dict[str, Tensor], dict[str, int]]:
    """Dead-zone mass ``mu`` (Taimeskhanov et al., eq. 7) of each method's map, per image.

    The maps (at the CAM layer) are upsampled to the image and min-max normalised, and ``mu`` is
    taken over the model's dead zone (:meth:`WalledCNN.dead_zone`).

    Returns:
        Method name -> ``(N,)`` float64 masses, and method name -> number of all-zero maps.
    """
    from metrics import cam_dead_zone_mass  # the metrics extra (Quantus)

    dead_zone = model.dead_zone().to(images.device)
    masses: dict[str, list[Tensor]] = {name: [] for name in WALL_METHODS}
    zeros = dict.fromkeys(WALL_METHODS, 0)
    for batch in images.split(batch_size):
        with torch.no_grad():
            predicted = model(batch).argmax(dim=1)
        for name, maps in wall_maps(model, model.cam_layer, batch, predicted).items():
            masses[name].append(cam_dead_zone_mass(maps, dead_zone, reduction="none"))
            zeros[name] += int((maps.flatten(start_dim=1).amax(dim=1) == 0).sum())
    return {name: torch.cat(values) for name, values in masses.items()}, zeros


def run_walls(epochs: int = 10, seed: int = 0, threads: int | None = 1) -> WallsReport:
    """Train the masked model and measure every method on the STACK-MIX-digits test pairs.

    ``threads=1`` (default) makes the numbers identical from run to run on a given CPU (a
    different thread count changes the order of float sums, hence the trained weights) and is
    the fastest for a model this small.
    """
    with torch_threads(threads):
        model, training = train_wall_cnn(epochs=epochs, seed=seed)
        test = stack_mix_digits("test", seed=seed)
        masses, zeros = dead_zone_masses(model, test.images)
    return WallsReport(
        masses=masses, zero_maps=zeros, dead_zone=model.dead_zone(), training=training
    )
