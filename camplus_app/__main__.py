"""``python -m camplus_app`` is the ``camplus`` command."""

from camplus_app.cli import main

raise SystemExit(main())
