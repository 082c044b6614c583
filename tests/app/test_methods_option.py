"""``--methods``: the default set, ``all``, and the listing of every registered method."""

from __future__ import annotations

import pytest

from camplus_app import cli
from camplus_app.errors import UsageError
from camplus_app.options import parse_methods
from captum_camplus import METHODS

FOUR = ["Grad-CAM", "Grad-CAM+", "Grad-CAM++", "HiResCAM"]


def test_the_default_is_the_four_and_all_is_every_method():
    assert parse_methods(None) == FOUR
    assert parse_methods("all") == list(METHODS) != FOUR
    assert parse_methods("xgradcam, all") == [
        "XGrad-CAM",
        *[m for m in METHODS if m != "XGrad-CAM"],
    ]
    with pytest.raises(UsageError, match="unknown CAM method 'nocam'"):
        parse_methods("nocam")


def test_help_lists_every_registered_method(capsys):
    with pytest.raises(SystemExit):
        cli.main(["compare", "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps at spaces and hyphens
    for name in METHODS:
        assert name.replace(" ", "") in text
    assert "'all'foreveryone(default:Grad-CAM,Grad-CAM+,Grad-CAM++,HiResCAM)" in text


def test_the_perturbation_methods_are_listed_named_and_in_all(capsys):
    """Score-CAM and Ablation-CAM: registered (not default), in the help, and in ``all``."""
    from captum_camplus.registry import FAMILIES

    assert parse_methods("scorecam, Ablation_CAM") == ["Score-CAM", "Ablation-CAM"]
    assert {"Score-CAM", "Ablation-CAM"} <= set(parse_methods("all")) - set(FOUR)
    assert list(FAMILIES["perturbation"]) == ["Score-CAM", "Ablation-CAM"]
    assert "Score-CAM" in repr(FAMILIES["perturbation"])
    with pytest.raises(SystemExit):
        cli.main(["explain", "--help"])
    text = "".join(capsys.readouterr().out.split())
    assert "Score-CAM,Ablation-CAM,or'all'" in text
