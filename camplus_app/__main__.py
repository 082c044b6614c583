"""``python -m camplus_app`` is the ``camplus`` command.

The working directory is already off ``sys.path`` here (``camplus_app/__init__.py``), so a
user's ``metrics.py`` in it is never imported in place of this distribution's ``metrics``.
"""

from camplus_app.cli import main

raise SystemExit(main())
