"""The ``camplus`` commands, one module each, on the shared pieces of :mod:`camplus_app.options`.

- :mod:`camplus_app.commands.explain`: ``camplus explain``, one overlay figure per image;
- :mod:`camplus_app.commands.compare`: ``camplus compare``, the experiment of Lerma & Lucas,
  section 4, streamed, resumable, under ``torchrun``.
"""
