"""A real torchvision detector, small enough for the tests (random weights, no downloads)."""

from __future__ import annotations

import pytest
import torch
from torch import nn


def tiny_faster_rcnn() -> nn.Module:
    """torchvision's Faster R-CNN (MobileNetV3 320 FPN, 3 classes) in eval mode, on a small
    canvas (96 x 128 -> 80 x 106, padded to 96 x 128), every box kept (``box_score_thresh=0``),
    its class scores untied by a wider init; skips the test without torchvision."""
    detection = pytest.importorskip("torchvision.models.detection")
    torch.manual_seed(0)
    detector = detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=3,
        box_score_thresh=0.0,
        min_size=80,
        max_size=160,
        rpn_pre_nms_top_n_test=100,
        rpn_post_nms_top_n_test=30,
    )
    nn.init.normal_(detector.roi_heads.box_predictor.cls_score.weight, std=0.5)
    return detector.eval()
