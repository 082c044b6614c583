"""``python -m captum_camplus`` is the ``camplus`` command."""

from captum_camplus.cli import main

raise SystemExit(main())
