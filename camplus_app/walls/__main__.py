"""``python -m camplus_app.walls``: 003 theorem 3 by simulation, then 003 table 1 in small."""

from __future__ import annotations

import argparse
import time

from camplus_app.walls.data import theorem3_images
from camplus_app.walls.experiment import run_walls, torch_threads
from camplus_app.walls.theorem3 import theorem3_experiment


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m camplus_app.walls",
        description="CAM methods see through walls (paper 003): theorem 3 and table 1 in small.",
    )
    parser.add_argument("--seeds", type=int, default=200, help="initializations for theorem 3")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of the table")
    parser.add_argument("--seed", type=int, default=0, help="seed of the trained model")
    parser.add_argument(
        "--skip-theorem", action="store_true", help="print only the table (003 table 1)"
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
