"""``python -m camplus_app.walls``: theorem 3 of Taimeskhanov et al. by simulation, then table 1.

References:
- Taimeskhanov, Sicre & Garreau (2024), "CAM-based methods can see through walls", ECML PKDD,
  arXiv:2404.01964.
"""

from __future__ import annotations

import argparse
import time

from camplus_app.walls.data import theorem3_images
from camplus_app.walls.experiment import run_walls, torch_threads
from camplus_app.walls.theorem3 import theorem3_experiment


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m camplus_app.walls",
        description="CAM methods see through walls (Taimeskhanov et al.): theorem 3, table 1.",
    )
    parser.add_argument("--seeds", type=int, default=200, help="initializations for theorem 3")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of the table")
    parser.add_argument("--seed", type=int, default=0, help="seed of the trained model")
    parser.add_argument(
        "--skip-theorem",
        action="store_true",
        help="print only the table (Taimeskhanov et al., table 1)",
    )
    args = parser.parse_args(argv)
    if not args.skip_theorem:
        start = time.perf_counter()
        with torch_threads(1):
            result = theorem3_experiment(theorem3_images(), seeds=args.seeds)
        print(result.summary())
        print(f"({time.perf_counter() - start:.1f} s)\n")
    print(run_walls(epochs=args.epochs, seed=args.seed).table())


if __name__ == "__main__":
    main()
