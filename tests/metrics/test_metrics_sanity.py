"""Sanity checks (Adebayo et al. 2018, arXiv:1810.03292): Quantus' MPRT and Random Logit with our
``cam_explain``, the layer given as a module or a name."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from metrics_models import tiny_setup

from metrics import cam_explain

pytestmark = pytest.mark.filterwarnings("ignore")  # Quantus warns about its own choices


@pytest.fixture(scope="module")
def setup():
    return tiny_setup(n=4, size=16)


def test_cam_explain_finds_a_module_layer_in_a_copy_of_the_model(setup) -> None:
    """The bug: MPRT explains a deep copy of the model, which does not hold the module."""
    model, images, labels = setup
    kwargs = {"method": "Grad-CAM", "layer": model.layer}
    first = cam_explain(model, images.numpy(), labels.numpy(), **kwargs)
    twin = copy.deepcopy(model)
    np.testing.assert_array_equal(
        cam_explain(twin, images.numpy(), labels.numpy(), **kwargs), first
    )
    with torch.no_grad():  # the copy's layer is randomised: its maps change, so they are its own
        twin.features[2].weight.normal_()
    changed = cam_explain(twin, images.numpy(), labels.numpy(), **kwargs)
    by_name = cam_explain(
        twin, images.numpy(), labels.numpy(), method="Grad-CAM", layer="features.3"
    )
    np.testing.assert_array_equal(changed, by_name)
    assert not np.array_equal(changed, first)


@pytest.mark.parametrize("layer", ["module", "features.3"])
def test_quantus_mprt_and_random_logit_run_with_cam_explain(setup, layer) -> None:
    quantus = pytest.importorskip("quantus")
    _, images, labels = setup
    model = tiny_setup(n=4, size=16)[0]  # a layer no earlier call has seen
    chosen = model.layer if layer == "module" else layer
    call = {
        "model": model,
        "x_batch": images.numpy(),
        "y_batch": labels.numpy(),
        "explain_func": cam_explain,
        "explain_func_kwargs": {"method": "Grad-CAM++", "layer": chosen},
        "device": "cpu",
    }
    mprt = quantus.MPRT(disable_warnings=True, return_average_correlation=False)(**call)
    randomised = {name for name, module in model.named_modules() if hasattr(module, "weight")}
    assert set(mprt) == {"original", *randomised}
    assert all(np.isfinite(v).all() for v in mprt.values())
    logit = quantus.RandomLogit(num_classes=5, disable_warnings=True)(**call)
    assert np.isfinite(logit).all() and len(logit) == len(images)


def test_a_module_of_unknown_place_is_refused_with_the_way_out(setup) -> None:
    _, images, labels = setup
    unseen = tiny_setup(n=1, size=16)[0]  # its ReLU layer has a twin (features.1)
    other = copy.deepcopy(unseen)
    with pytest.raises(ValueError, match=r"2 modules of its structure: pass the layer's name"):
        cam_explain(other, images.numpy(), labels.numpy(), method="Grad-CAM", layer=unseen.layer)
    # a module with parameters of a unique shape is found by its structure alone
    conv = unseen.features[2]
    found = cam_explain(other, images.numpy(), labels.numpy(), method="Grad-CAM", layer=conv)
    by_name = cam_explain(
        other, images.numpy(), labels.numpy(), method="Grad-CAM", layer="features.2"
    )
    np.testing.assert_array_equal(found, by_name)


# --- cascading randomisation (Adebayo et al., section 3.1)
# ---------------------------------------------------------------------------


def test_cascade_equals_a_step_by_step_randomisation_and_scipy(setup) -> None:
    stats = pytest.importorskip("scipy.stats")
    from metrics import compute_cams
    from metrics.sanity import cascading_randomisation

    model, images, labels = setup
    before = copy.deepcopy(model.state_dict())
    methods = ["Grad-CAM", "HiResCAM"]
    got = cascading_randomisation(model, model.layer, images, labels, methods=methods, seed=7)
    assert got.layers == ["head", "features.2", "features.0"]
    for key, value in model.state_dict().items():  # the model itself is untouched
        torch.testing.assert_close(value, before[key])
    trained = compute_cams(model, model.layer, images, labels, methods)
    twin = copy.deepcopy(model)
    for step, name in enumerate(["head", "features.2", "features.0"]):
        torch.manual_seed(7 + step)
        twin.get_submodule(name).reset_parameters()
        random = compute_cams(twin, twin.layer, images, labels, methods)
        for method in methods:
            for i in range(len(images)):
                a, b = trained[method][i].flatten(), random[method][i].flatten()
                if a.min() == a.max() or b.min() == b.max():
                    assert torch.isnan(got.correlation[method][step, i])
                    continue
                expected = stats.spearmanr(a.double().numpy(), b.double().numpy()).statistic
                assert got.correlation[method][step, i].item() == pytest.approx(expected, abs=1e-12)
    assert all(c.shape == (3, len(images)) for c in got.correlation.values())


def test_spearman_ties_constant_rows_and_bad_depth(setup) -> None:
    from metrics.sanity import average_ranks, cascading_randomisation, spearman

    rows = torch.tensor([[0.0, 0.0, 2.0, 1.0, 2.0], [3.0, 3.0, 3.0, 3.0, 3.0]])
    assert average_ranks(rows).tolist() == [[1.5, 1.5, 4.5, 3.0, 4.5], [3.0] * 5]
    result = spearman(rows, torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]] * 2))
    stats = pytest.importorskip("scipy.stats")
    expected = stats.spearmanr([0, 0, 2, 1, 2], [1, 2, 3, 4, 5]).statistic
    assert result[0].item() == pytest.approx(expected, abs=1e-12)
    assert torch.isnan(result[1])
    model, images, labels = setup
    for depth in (0, 4, 1.5):
        with pytest.raises(ValueError, match="depth must be an integer from 1 to 3"):
            cascading_randomisation(model, model.layer, images, labels, depth=depth)
