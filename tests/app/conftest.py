"""Fixtures of the application's tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from camplus_app import figures

#: ``figure_calls(name)``: the calls of ``camplus_app.figures.<name>`` from then on, by image.
FigureCalls = Callable[[str], dict[str, tuple[Any, Any, str]]]


@pytest.fixture
def figure_calls(monkeypatch: pytest.MonkeyPatch) -> FigureCalls:
    """Spy on a figure function of :mod:`camplus_app.figures` (which still draws): each call's
    ``(image, heatmaps or panels, title)`` kept under the image's name (its title up to ':')."""

    def spy_on(name: str) -> dict[str, tuple[Any, Any, str]]:
        calls: dict[str, tuple[Any, Any, str]] = {}
        real = getattr(figures, name)

        def spy(image: Any, drawn: Any, title: str) -> Any:
            calls[title.split(":")[0]] = (image, drawn, title)
            return real(image, drawn, title)

        monkeypatch.setattr(figures, name, spy)
        return calls

    return spy_on
