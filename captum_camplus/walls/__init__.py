"""See through walls (paper 003): masked models, their dead zones, and what each CAM puts there.

>>> from captum_camplus.walls import WallCNN, mask_linear_input, bottom_rows, unseen_region
>>> model = WallCNN()                      # the head cannot see the bottom 6 of 8 feature rows
>>> model.dead_zone()                      # (16, 8) bool: the input pixels it cannot see

``python -m captum_camplus.walls`` runs 003 theorem 3 by simulation and prints the dead-zone-mass
table (003 table 1) of a masked CNN trained on STACK-MIX-digits.
"""

from captum_camplus.walls.cams import WALL_METHODS, wall_maps
from captum_camplus.walls.data import (
    StackedDigits,
    load_digits_tensors,
    stack_mix_digits,
    theorem3_images,
)
from captum_camplus.walls.experiment import (
    TrainingReport,
    WallsReport,
    dead_zone_masses,
    run_walls,
    train_wall_cnn,
)
from captum_camplus.walls.masking import (
    ViewMask,
    bottom_rows,
    mask_linear_input,
    max_output_change,
    unseen_region,
)
from captum_camplus.walls.models import Theorem3CNN, WallCNN, WalledCNN
from captum_camplus.walls.theorem3 import Theorem3Result, theorem3_experiment

__all__ = [
    "WALL_METHODS",
    "StackedDigits",
    "Theorem3CNN",
    "Theorem3Result",
    "TrainingReport",
    "ViewMask",
    "WallCNN",
    "WalledCNN",
    "WallsReport",
    "bottom_rows",
    "dead_zone_masses",
    "load_digits_tensors",
    "mask_linear_input",
    "max_output_change",
    "run_walls",
    "stack_mix_digits",
    "theorem3_experiment",
    "theorem3_images",
    "train_wall_cnn",
    "unseen_region",
    "wall_maps",
]
