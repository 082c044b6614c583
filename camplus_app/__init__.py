"""The application layer of captum-camplus, built on the core and the metrics.

- :mod:`camplus_app.cli`: the ``camplus`` command: parses, dispatches, owns the exit statuses;
  :mod:`camplus_app.errors`: the exit statuses and the errors that choose them;
  :mod:`camplus_app.options`: the pieces the commands share (option parsing);
  :mod:`camplus_app.commands.explain`: ``explain``, one figure per image;
  :mod:`camplus_app.commands.compare`: ``compare`` on a data set, streamed, resumable, under
  ``torchrun``;
  :mod:`camplus_app.runs`: one output folder per run, its manifest and its backup;
  :mod:`camplus_app.locks`: the lock that keeps a folder to one run;
  :mod:`camplus_app.parts`: the part files a run streams its results to;
  :mod:`camplus_app.textsafe`: CSV cells and file names safe to write;
  :mod:`camplus_app.report`: the run's ``report.md``;
- :mod:`camplus_app.zoo`: the bundled EfficientNet-Lite0 and timm/torchvision models from local
  weights; :mod:`camplus_app.images`: image loading (every Pillow mode);
  :mod:`camplus_app.datasets`: class folders, flat folders and the bundled photographs;
  :mod:`camplus_app.figures`: figures;
- experiments: :mod:`camplus_app.walls` (``python -m camplus_app.walls``) and
  :mod:`camplus_app.metrics_demo` (``python -m camplus_app.metrics_demo``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _drop_working_directory() -> None:
    """Under ``python -m camplus_app...`` (and ``torchrun -m camplus_app``), take the working
    directory off the front of ``sys.path``, where ``-m`` puts it: a user's ``metrics.py`` (or
    ``metrics/``) there would otherwise be imported instead of this distribution's ``metrics``
    package, and run. It runs here, as this package is imported to find the module ``-m``
    names, before any module of ours imports ``metrics``; an import of ``camplus_app`` from a
    user's own program changes nothing. A checkout run from its own root keeps its folder."""
    argv = getattr(sys, "orig_argv", [])
    try:
        module = argv[argv.index("-m") + 1]
    except (ValueError, IndexError):
        return
    if sys.argv[:1] != ["-m"] or module.partition(".")[0] != __name__:
        return
    here = Path(__file__).resolve().parent.parent
    first = Path(sys.path[0] or os.curdir).resolve() if sys.path else None
    if first == Path.cwd().resolve() and first != here:
        del sys.path[0]


_drop_working_directory()
