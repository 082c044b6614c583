"""evaluate_methods under torch.distributed: two CPU processes on gloo equal one process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from metrics_models import tiny_setup
from torch.utils.data import DataLoader, TensorDataset

from captum_camplus.masking import bottom_rows
from metrics import EvaluationResult, evaluate_methods

WORLD = 2
N_IMAGES = 7  # an odd count: the shards differ in size
OPTIONS = {"unseen": bottom_rows(16, 16, 4), "batch_size": 2, "progress": False}


def _evaluate_tensor() -> EvaluationResult:
    model, images, labels = tiny_setup(n=N_IMAGES, dead_rows=2)
    return evaluate_methods(model, model.layer, images, labels=labels, **OPTIONS)


def _evaluate_loader(rank: int) -> EvaluationResult:
    model, images, labels = tiny_setup(n=N_IMAGES, dead_rows=2)
    shard = slice(0, 4) if rank == 0 else slice(4, N_IMAGES)  # this rank's part of the data
    loader = DataLoader(TensorDataset(images[shard], labels[shard]), batch_size=3)
    return evaluate_methods(model, model.layer, loader, **OPTIONS)


def _worker(rank: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        results = {"tensor": _evaluate_tensor(), "loader": _evaluate_loader(rank)}
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def assert_same(a: EvaluationResult, b: EvaluationResult) -> None:
    assert a.index.tolist() == b.index.tolist() and a.target.tolist() == b.target.tolist()
    assert a.images_seen == b.images_seen
    torch.testing.assert_close(a.log_y, b.log_y)
    for source in a.maps_from:
        for method in a.methods:
            for field in ("o", "log_o", "dead_zone"):
                torch.testing.assert_close(
                    getattr(a, field)[source][method], getattr(b, field)[source][method]
                )
    # the float32 forwards of differently composed batches differ in the last bits
    for rows_a, rows_b in (
        (a.summary(), b.summary()),
        (a.relative_performance(), b.relative_performance()),
    ):
        assert [r.keys() for r in rows_a] == [r.keys() for r in rows_b]
        for ra, rb in zip(rows_a, rows_b, strict=True):
            for key, value in ra.items():
                if isinstance(value, float):
                    torch.testing.assert_close(value, rb[key], rtol=1e-5, atol=1e-6)
                else:
                    assert value == rb[key]


@pytest.mark.slow  # two fresh interpreters import torch and quantus: about 30 s on 2 cores
def test_two_gloo_processes_equal_one_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    single = _evaluate_tensor()
    assert single.index.tolist() == list(range(N_IMAGES))
    for results in ranks:  # every rank has the whole table
        assert_same(results["tensor"], single)
        assert_same(results["loader"], single)
