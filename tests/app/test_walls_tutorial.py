"""The see-through-walls tutorial runs from top to bottom, offline."""

from __future__ import annotations

import re
from pathlib import Path

import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "tutorials" / "04_see_through_walls.ipynb"


@pytest.mark.slow
def test_see_through_walls_notebook_runs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    printed = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "output change, dead zone redrawn:      0.0\n" in printed
    quantus = dict(re.findall(r"(\S+) +Quantus mu x 100 = ([\d.]+), same as above: True", printed))
    assert float(quantus["HiResCAM"]) == 0.0
    assert float(quantus["Grad-CAM"]) > 10.0
