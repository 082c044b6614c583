"""Provenance: every field is filled from the running process, and git's absence is survived."""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path

import pytest
import torch

from camplus_app import provenance


def test_collect_fills_every_field() -> None:
    record = provenance.collect("cpu", processes=2, seed=5, command=["camplus", "compare", "x y"])
    record.finish()
    data = record.to_json()
    assert set(data["versions"]) == set(provenance.PACKAGES)
    assert data["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert data["versions"]["captum-camplus"] is not None
    assert data["threads"] == torch.get_num_threads()
    assert (data["processes"], data["seed"], data["device"]) == (2, 5, "cpu")
    assert data["command"] == ["camplus", "compare", "x y"]
    for key in ("started", "finished"):
        assert datetime.fromisoformat(data[key]).utcoffset().total_seconds() == 0
    rows = dict(record.markdown_rows())
    assert {"software", "python", "commit", "device", "threads per process", "processes"} <= set(
        rows
    )
    assert {"seed", "command", "started (UTC)", "finished (UTC)"} <= set(rows)


def test_git_state_of_this_checkout_and_without_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(provenance.__file__).resolve().parent.parent
    commit, dirty = provenance.git_state(root)
    if (root / ".git").exists():
        assert commit is not None and len(commit) == 40 and isinstance(dirty, bool)
    assert provenance.git_state(tmp_path) == (None, None)  # not a checkout

    def missing(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", missing)
    (tmp_path / ".git").mkdir()
    assert provenance.git_state(tmp_path) == (None, None)
    assert provenance.version("no-such-distribution-camplus") is None
