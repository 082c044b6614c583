"""``camplus compare`` moved to :mod:`camplus_app.commands.compare`; these names stay here for
code that imports them from this module."""

from __future__ import annotations

import argparse

from camplus_app.cli import exit_status
from camplus_app.commands import compare
from camplus_app.commands.compare import CompareJob, Processes, Settings


def run_compare(args: argparse.Namespace) -> int:
    """``camplus compare`` from parsed arguments; returns the exit status."""
    return exit_status(lambda: compare.run(args))


__all__ = ["CompareJob", "Processes", "Settings", "run_compare"]
