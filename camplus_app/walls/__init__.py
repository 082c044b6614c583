"""See through walls: masked models, their dead zones, and what each CAM puts there.

The masking tools are library features, in the core: :mod:`captum_camplus.masking`.

>>> from camplus_app.walls import WallCNN
>>> model = WallCNN()                      # the head cannot see the bottom 6 of 8 feature rows
>>> model.dead_zone()                      # (16, 8) bool: the input pixels it cannot see

``python -m camplus_app.walls`` runs Taimeskhanov et al., theorem 3 by simulation and prints the
dead-zone-mass table (Taimeskhanov et al., table 1) of a masked CNN trained on STACK-MIX-digits.

References:
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD,
  arXiv:2404.01964.
"""

from camplus_app.walls.cams import WALL_METHODS, wall_maps
from camplus_app.walls.data import (
    StackedDigits,
    load_digits_tensors,
    stack_mix_digits,
    theorem3_images,
)
from camplus_app.walls.experiment import (
    TrainingReport,
    WallsReport,
    dead_zone_masses,
    run_walls,
    train_wall_cnn,
)
from camplus_app.walls.models import Theorem3CNN, WallCNN, WalledCNN
from camplus_app.walls.theorem3 import Theorem3Result, theorem3_experiment

__all__ = [
    "WALL_METHODS",
    "StackedDigits",
    "Theorem3CNN",
    "Theorem3Result",
    "TrainingReport",
    "WallCNN",
    "WalledCNN",
    "WallsReport",
    "dead_zone_masses",
    "load_digits_tensors",
    "run_walls",
    "stack_mix_digits",
    "theorem3_experiment",
    "theorem3_images",
    "train_wall_cnn",
    "wall_maps",
]
