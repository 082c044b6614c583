"""Make ``detection_map.png``: ``camplus explain`` on a detector, a non-square photograph.

    python tutorials/figures/detection_map.py

No detector weights ship offline, so the detector is torchvision's
``fasterrcnn_mobilenet_v3_large_320_fpn`` with random weights (seed 0) whose classifier bias
favours class 1: its boxes are arbitrary proposals, scored about 0.995. The picture shows the
mechanics, not an explanation of a trained model: each box's map is computed on the detector's
resized, padded canvas and brought back onto the 451 x 300 photograph at its own size, drawn
with its box. With trained weights, pass your state dict to ``--weights`` instead.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from torchvision import models

from camplus_app import cli

HERE = Path(__file__).resolve().parent
MODEL = "fasterrcnn_mobilenet_v3_large_320_fpn"


def main() -> None:
    torch.manual_seed(0)
    detector = models.get_model(MODEL, weights=None, weights_backbone=None, num_classes=3)
    with torch.no_grad():
        detector.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([0.0, 6.0, 0.0]))
    with tempfile.TemporaryDirectory() as work:
        weights = Path(work) / "detector.pt"
        torch.save(detector.state_dict(), weights)
        out = Path(work) / "out"
        options = ["--boxes", "2", "--methods", "Grad-CAM,HiResCAM", "--threads", "1"]
        argv = ["explain", "chelsea", "--model", MODEL, "--weights", str(weights), *options]
        status = cli.main([*argv, "-o", str(out), "--quiet"])
        if status:
            raise SystemExit(status)
        shutil.copyfile(out / "chelsea.png", HERE / "detection_map.png")
        print((out / "detections.csv").read_text())


if __name__ == "__main__":
    main()
