"""The layout sweep (``benchmarks/layout_sweep.py``): its oracle matching finds the permutation,
a wrong reading is classed ``wrong``, and a subset of timm and Hugging Face families has no
``wrong`` row (slow)."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch

pytest.importorskip("timm")
pytest.importorskip("transformers")

from benchmarks import layout_families as lf  # noqa: E402
from benchmarks import layout_sweep as sweep  # noqa: E402
from captum_camplus.registry import FAMILIES  # noqa: E402


def test_every_registered_gradient_method_has_its_reference():
    assert set(sweep.REFERENCES) == set(FAMILIES["gradient"])


def test_match_finds_the_permutation_that_puts_the_tokens_on_the_oracles_grid():
    gen = torch.Generator().manual_seed(0)
    oracle = torch.randn(2, 6, 3, 4, generator=gen, dtype=torch.float64)
    cells = oracle.flatten(2).transpose(1, 2)  # (N, 12, C)
    order = torch.randperm(12, generator=gen)
    prefix = torch.randn(2, 2, 6, generator=gen, dtype=torch.float64)
    tokens = torch.cat([prefix, cells[:, order]], dim=1)  # (N, 2 + 12, C), shuffled
    axis, perm = sweep.match(tokens, oracle)
    assert axis == 2
    torch.testing.assert_close(tokens[:, perm], cells)
    assert sweep.match(tokens.flip(0), oracle) is None  # another image's tokens: no match
    assert sweep.match(tokens[:, :-1], oracle) is None  # a cell missing


def test_find_stages_reads_a_modules_tokens_and_the_stage_classes_a_wrong_reading():
    torch.manual_seed(0)
    model = lf.Tokens(prefix=1, patch=8).eval()
    x = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    model64, x64 = copy.deepcopy(model).double(), x.double()
    with torch.no_grad():
        embedded = model64.embed(x64)  # (N, C, 4, 6), the norm's input: the oracle
        oracle = torch.nn.functional.layer_norm(
            embedded.movedim(1, -1), (6,), model64.norm.weight, model64.norm.bias
        ).movedim(-1, 1)
    (stage,) = sweep.find_stages(model64, x64, [("norm", oracle)])
    assert stage.module == "norm" and stage.grid == (4, 6) and stage.axis == 2
    assert stage.perm is not None
    assert stage.perm.tolist() == list(range(1, 25))  # the class token dropped, row-major
    A, g = sweep.capture(model64, x64, ["norm"])["norm"]
    expected = {
        m: f(sweep.on_grid(A, stage), sweep.on_grid(g, stage)) for m, f in sweep.REFERENCES.items()
    }
    assert sweep.check_stage(model, model64, x, stage, expected) == ("correct", "")
    wrong = copy.copy(stage)
    wrong.perm = stage.perm.flip(0)  # the grid read backwards
    expected = {
        m: f(sweep.on_grid(A, wrong), sweep.on_grid(g, wrong)) for m, f in sweep.REFERENCES.items()
    }
    outcome, detail = sweep.check_stage(model, model64, x, wrong, expected)
    assert outcome == "wrong" and "float64 maps" in detail


def test_the_table_counts_every_outcome():
    rows = [
        sweep.Row("a", "m", "64 x 64", "index 0", "correct", ""),
        sweep.Row("a", "m", "64 x 96", "index 0", "refused", "ValueError: layout ..."),
        sweep.Row("b", "n", "square", "-", "skipped", "does not run"),
    ]
    text = sweep.table(rows, 1.0, "python -m benchmarks.layout_sweep")
    assert "| **all** | **1** | **1** | **0** | **1** |" in text
    assert "| a | `m` | 1 | 1 | 0 | 0 |" in text
    assert "| b | square | - | skipped | does not run |" in text


@pytest.mark.slow
def test_the_sweep_of_a_subset_has_no_wrong_row():
    """Every (family, size, stage) of the subset is correct, refused or skipped with a reason;
    each family has a correct row (the oracle found its module and the maps matched)."""
    rows = sweep.sweep(sweep.QUICK_FAMILIES, seconds=240.0)  # no time-out skips under load
    assert {r.outcome for r in rows} <= set(sweep.OUTCOMES)
    wrong = [r for r in rows if r.outcome == "wrong"]
    assert not wrong, wrong
    assert all(r.detail for r in rows if r.outcome in ("refused", "skipped"))
    correct = Counter(r.family for r in rows if r.outcome == "correct")
    assert set(correct) == set(sweep.QUICK_FAMILIES), correct
