"""The application layer of captum-camplus, built on the core and the metrics.

- :mod:`camplus_app.cli`: the ``camplus`` command: parses, dispatches, owns the exit statuses;
  :mod:`camplus_app.options`: the pieces the commands share (errors, option parsing);
  :mod:`camplus_app.commands.explain`: ``explain``, one figure per image;
  :mod:`camplus_app.commands.compare`: ``compare`` on a data set, streamed, resumable, under
  ``torchrun`` (:mod:`camplus_app.compare` keeps its old names);
  :mod:`camplus_app.processes`: this process's rank, GPU and collectives under ``torchrun``;
  :mod:`camplus_app.runs`: one output folder per run, its manifest, lock and part files;
  :mod:`camplus_app.report`: the run's ``report.md``;
- :mod:`camplus_app.zoo`: the bundled EfficientNet-Lite0 and timm/torchvision models from local
  weights; :mod:`camplus_app.images`: image loading (every Pillow mode);
  :mod:`camplus_app.datasets`: class folders, flat folders and the bundled photographs;
  :mod:`camplus_app.figures`: figures;
- experiments: :mod:`camplus_app.walls` (``python -m camplus_app.walls``) and
  :mod:`camplus_app.metrics_demo` (``python -m camplus_app.metrics_demo``).
"""
