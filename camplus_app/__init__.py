"""The application layer of captum-camplus, built on the core and the metrics.

- :mod:`camplus_app.cli`: the ``camplus`` command (``explain``, ``compare``);
- :mod:`camplus_app.zoo`: the bundled EfficientNet-Lite0 and timm/torchvision models from local
  weights; :mod:`camplus_app.images`: image loading; :mod:`camplus_app.figures`: figures;
- experiments: :mod:`camplus_app.walls` (``python -m camplus_app.walls``) and
  :mod:`camplus_app.metrics_demo` (``python -m camplus_app.metrics_demo``).
"""
