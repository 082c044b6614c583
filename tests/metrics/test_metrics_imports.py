"""What importing the metrics costs and changes: no Quantus until a Quantus name is used, the
registration in ``quantus.available_metrics()`` when it is, and a star import without Quantus.

The checks of what an import loads run in a fresh interpreter: this test process has imported
Quantus long ago.
"""

from __future__ import annotations

import json

import pytest
from test_architecture import _run

FIVE = [
    "Average Drop",
    "Increase in Confidence",
    "Win Percentage",
    "Relative Performance",
    "Dead Zone Mass",
]


def _fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter; it prints one JSON object as its last line."""
    result = _run(code)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_quantus_is_imported_and_its_registry_changed_only_when_a_quantus_name_is_used() -> None:
    seen = _fresh(
        """
        import json, sys
        import metrics.functional
        import metrics
        from metrics import evaluate_methods
        before = "quantus" in sys.modules
        metrics.AverageDrop
        import quantus
        listed = quantus.available_metrics()["Faithfulness"]
        print(json.dumps({"before": before, "listed": listed}))
        """
    )
    assert seen["before"] is False
    assert all(seen["listed"].count(name) == 1 for name in FIVE)


def test_importing_the_quantus_module_registers_the_five_metrics() -> None:
    seen = _fresh(
        """
        import json
        import quantus
        before = quantus.available_metrics()["Faithfulness"]
        import metrics.quantus_metrics
        after = quantus.available_metrics()["Faithfulness"]
        print(json.dumps({"before": before, "after": after}))
        """
    )
    assert not set(FIVE) & set(seen["before"])
    assert all(seen["after"].count(name) == 1 for name in FIVE)


def test_star_import_without_quantus_gives_the_rest() -> None:
    seen = _fresh(
        """
        import json, sys
        sys.modules["quantus"] = None  # as if it were not installed
        from metrics import *
        print(json.dumps({"names": sorted(dir())}))
        """
    )
    assert {"evaluate_methods", "average_drop", "cam_explain"} <= set(seen["names"])
    assert "AverageDrop" not in seen["names"]


def test_the_quantus_names_and_the_registration_function() -> None:
    import quantus

    import metrics
    from metrics import AverageDrop, register_quantus_metrics
    from metrics.quantus_registry import register_quantus_metrics as defined

    assert register_quantus_metrics is defined
    assert {"AverageDrop", "register_quantus_metrics"} <= set(metrics.__all__) & set(dir(metrics))
    assert quantus.available_metrics()["Faithfulness"].count(AverageDrop.name) == 1
    with pytest.raises(AttributeError, match="no attribute 'register'"):
        metrics.register  # noqa: B018 (the old, too generic name)
