"""Local Hugging Face model folders for the tests, built offline with random weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch


def vit_folder(folder: Path, labels: Sequence[str]) -> Path:
    """A tiny ``ViTForImageClassification`` (32 x 32 images, 8 x 8 patches) saved in ``folder``,
    one output per label (one label: a binary model's logit); skips without ``transformers``."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    return folder
