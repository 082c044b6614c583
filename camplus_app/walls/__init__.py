"""See through walls (paper 003): masked models, their dead zones, and what each CAM puts there.

The masking tools are library features, in the core: :mod:`captum_camplus.masking`.

>>> from camplus_app.walls import WallCNN
>>> model = WallCNN()                      # the head cannot see the bottom 6 of 8 feature rows
>>> model.dead_zone()                      # (16, 8) bool: the input pixels it cannot see

``python -m camplus_app.walls`` runs 003 theorem 3 by simulation and prints the dead-zone-mass
table (003 table 1) of a masked CNN trained on STACK-MIX-digits.
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
