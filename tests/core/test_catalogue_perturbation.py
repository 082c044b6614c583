"""Score-CAM and Ablation-CAM: float64 references, pytorch-grad-cam's weights, LayerCams'
shared capture, chunks under the memory budget, and their refusals."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import captum_camplus.testing.reference as ref
from captum_camplus import LayerAblationCam, LayerCams, LayerScoreCam
from captum_camplus.utils import cpu_forward_rows


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 5, 3, padding=1),
        nn.ReLU(),  # the layer: (N, 5, 6, 6)
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 4),
    ).eval()


@pytest.fixture
def case():
    model = small_cnn()
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    return model, x, [0, 2, 3]


def test_score_cam_matches_its_float64_reference(case):
    model, x, target = case
    model64 = copy.deepcopy(model).double()
    for align in (False, True):
        expected = ref.score_cam(model64, model64[4], x, target, align_corners=align)
        ours = LayerScoreCam(model64, model64[4], align_corners=align)
        cam = ours.attribute(x.double(), target=target)
        np.testing.assert_allclose(cam.numpy(), expected, rtol=1e-10, atol=1e-12)
    cam32 = LayerScoreCam(model, model[4]).attribute(x, target=target)
    expected = ref.score_cam(model64, model64[4], x, target)
    assert np.abs(cam32.double().numpy() - expected).max() < 1e-4 * np.abs(expected).max()


def test_ablation_cam_matches_its_float64_reference(case):
    model, x, target = case
    model64 = copy.deepcopy(model).double()
    expected = ref.ablation_cam(model64, model64[4], x, target)
    cam = LayerAblationCam(model64, model64[4]).attribute(x.double(), target=target)
    np.testing.assert_allclose(cam.numpy(), expected, rtol=1e-10, atol=1e-12)


class Residual(nn.Module):
    """conv -> ReLU (the layer) -> conv, plus the block's input: a skip around the layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.relu, self.out = (
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 3, 1),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))

    def forward(self, x):
        return self.head(self.out(self.relu(self.conv(x))) + x)


def test_ablation_inside_a_residual_block_runs_every_row_from_the_input():
    """The skip connection holds the whole batch, so the rows run from the input (the check of
    two unablated rows chooses it); the numbers are still the reference's."""
    torch.manual_seed(0)
    model = Residual().double().eval()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    expected = ref.ablation_cam(model, model.relu, x, [1, 0, 3])
    cam = LayerAblationCam(model, model.relu).attribute(x, target=[1, 0, 3])
    np.testing.assert_allclose(cam.numpy(), expected, rtol=1e-10, atol=1e-12)


class Rows(nn.Module):
    """Records the number of rows each forward gives it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def forward(self, t):
        self.seen.append(len(t))
        return t


def test_ablation_runs_the_layers_before_once_per_chunk_for_per_image_targets(case):
    """With a target per image (as camplus compare passes), each chunk of ablated rows runs the
    layers before the layer on its one image only."""
    model, x, target = case
    counted = nn.Sequential(Rows(), *model).double()
    cam = LayerAblationCam(counted, counted[5], memory_budget=2 * 36 * 8 * 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = cam.attribute(x.double(), target=target)
    seen = list(counted[0].seen)
    expected = ref.ablation_cam(counted, counted[5], x, target)
    np.testing.assert_allclose(found.numpy(), expected, rtol=1e-10, atol=1e-12)
    # capture, y, the check, then 3 images x 3 chunks (2 + 2 + 1 of the 5 channels)
    assert seen == [3, 3, 1] + [1] * 9


class Concatenating(nn.Module):
    """A side branch from the input joins the layer's output by concatenation: the rows after
    the layer cannot outnumber the rows before it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.relu, self.side = (
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(3, 2, 1),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))

    def forward(self, x):
        return self.head(torch.cat([self.relu(self.conv(x)), self.side(x)], dim=1))


def test_a_model_that_needs_its_batch_whole_runs_every_row_from_the_input_and_says_so():
    model = Concatenating().double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match=r"failed \(RuntimeError: .*the run slower"):
        cam = LayerAblationCam(model, model.relu).attribute(x, target=[2, 0])
    expected = ref.ablation_cam(model, model.relu, x, [2, 0])
    np.testing.assert_allclose(cam.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_pytorch_grad_cam_weights_are_ours(case):
    """Their ScoreCAM (bilinear with align_corners=True, 1e-8 in the normalisation) and
    AblationCAM (on a ReLU layer, where their ablation value is 0) give our maps."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x, target = case
    A, g = ref.capture_layer(model, model[4], x, target)
    targets = [ClassifierOutputTarget(t) for t in target]
    for name, ours in (
        ("ScoreCAM", LayerScoreCam(model, model[4], align_corners=True)),
        ("AblationCAM", LayerAblationCam(model, model[4], ablation_value=None)),
    ):
        with getattr(pytorch_grad_cam, name)(model=model, target_layers=[model[4]]) as cam:
            theirs = cam.get_cam_image(x, model[4], targets, A.numpy(), g.numpy(), False)
        mine = ours.attribute(x, target=target)[:, 0].numpy()
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5 * np.abs(mine).max())


def test_layer_cams_shares_the_capture_and_gives_each_class_map(case):
    model, x, target = case
    methods = {"Score-CAM": LayerScoreCam, "Ablation-CAM": LayerAblationCam}
    maps = LayerCams(model, model[4], methods=methods).attribute(x, target=target)
    for name, cls in (("Score-CAM", LayerScoreCam), ("Ablation-CAM", LayerAblationCam)):
        torch.testing.assert_close(maps[name], cls(model, model[4]).attribute(x, target=target))


def test_chunks_follow_the_budget_and_report_progress(case):
    model, x, target = case
    seen = []
    whole = LayerScoreCam(model, model[4]).attribute(x, target=target)
    one_row = x[0].numel() * x.element_size()
    chunked = LayerScoreCam(
        model, model[4], memory_budget=2 * one_row, progress=lambda d, t: seen.append((d, t))
    ).attribute(x, target=target)
    torch.testing.assert_close(chunked, whole)
    assert len(seen) == 8 and seen[-1] == (15, 15)  # 3 images x 5 channels, 2 rows a chunk
    seen.clear()  # the default budget holds all 15 rows, and so does a CPU forward of these
    LayerScoreCam(model, model[4], progress=lambda d, t: seen.append((d, t))).attribute(x, target)
    assert cpu_forward_rows(one_row) >= 15 and seen == [(15, 15)]
    big = x.repeat_interleave(19, dim=2).repeat_interleave(19, dim=3)  # 228 x 228: 7 a forward
    seen.clear()
    LayerScoreCam(model, model[4], progress=lambda d, t: seen.append((d, t))).attribute(big, target)
    assert cpu_forward_rows(big[0].numel() * 4) == 7 and [d for d, _ in seen][:2] == [7, 14]
    with pytest.raises(ValueError, match=f"too small for one forward.*memory_budget >= {one_row}"):
        LayerScoreCam(model, model[4], memory_budget=one_row - 1).attribute(x, target=target)
    with pytest.raises(ValueError, match="too small for one forward"):
        LayerAblationCam(model, model[4], memory_budget=10).attribute(x, target=target)


def test_bad_input_is_refused_with_the_way_out(case):
    model, x, target = case
    pixels = (x * 50 + 128).clamp(0, 255).long()  # integer images: no mask in [0, 1] applies
    with pytest.raises(ValueError, match=r"float \(N, C, H, W\) inputs, got torch.int64"):
        LayerScoreCam(lambda t: model(t.float()), model[4]).attribute(pixels, target=0)
    calls = []

    def zero_scores(t):
        calls.append(len(t))
        return model(t) * 0

    with pytest.raises(
        ValueError, match=r"divides by the target score, which is 0 for images \[0, 1"
    ):
        LayerAblationCam(zero_scores, model[4]).attribute(x, target=0)
    assert calls == [len(x), len(x)]  # the capture and the images' scores: no ablated forward
    with pytest.raises(ValueError, match="channels-first layer"):
        LayerScoreCam(model, model[4], layout="channels_last")
    with pytest.raises(TypeError, match="forwards of the model"):
        LayerScoreCam(model, model[4]).map_from_layer(
            torch.rand(1, 5, 6, 6), torch.rand(1, 5, 6, 6)
        )
    with pytest.raises(ValueError, match="attribute_to_layer_input"):
        LayerScoreCam(model, model[4]).attribute(x, target=0, attribute_to_layer_input=True)


class Log(nn.Module):
    """``log`` of its input: finite for positive values only."""

    def forward(self, t):
        return torch.log(t)


class Shift(nn.Module):
    """Its input plus a constant."""

    def __init__(self, by: float) -> None:
        super().__init__()
        self.by = by

    def forward(self, t):
        return t + self.by


def test_edits_outside_the_model_s_range_are_refused_naming_them(case):
    """Score-CAM's masked inputs reach 0 and Ablation-CAM's ablated channel is 0: a model that
    takes the log of either scores them -inf or NaN, which would make NaN maps."""
    model, x, target = case
    positive = x.abs() + 0.5
    logged = nn.Sequential(Log(), *model)
    with pytest.raises(
        ValueError,
        match=r"score of Score-CAM's masked inputs .* is NaN or inf: 0 must be in the range",
    ):
        LayerScoreCam(logged, logged[5]).attribute(positive, target=target)

    def refuses_zeros(t):
        if bool((t == 0).any()):
            raise RuntimeError("pixels of 0 are outside this model's range")
        return model(t)

    with pytest.raises(
        ValueError, match=r"failed on Score-CAM's masked inputs.*\(pixels of 0 .*\): 0 must be"
    ):
        LayerScoreCam(refuses_zeros, model[4]).attribute(positive, target=target)
    after_log = nn.Sequential(*model[:5], Shift(1.0), Log(), *model[5:])  # finite for A >= 0
    with pytest.raises(
        ValueError, match=r"Ablation-CAM's layer outputs .*ablation_value=-1.0\) is NaN or inf"
    ):
        LayerAblationCam(after_log, after_log[4], ablation_value=-1.0).attribute(x, target=target)
    with pytest.raises(ValueError, match="score of the images is NaN or inf: Ablation-CAM"):
        LayerAblationCam(lambda t: model(t) / 0, model[4]).attribute(x, target=target)


@pytest.mark.parametrize("cls", [LayerScoreCam, LayerAblationCam])
def test_a_budget_below_one_forward_is_refused_through_layer_cams(case, cls):
    model, x, target = case
    small = {"tiny": lambda f, layer, ids: cls(f, layer, ids, memory_budget=1)}
    with pytest.raises(ValueError, match="memory_budget=1 bytes is too small for one forward"):
        LayerCams(model, model[4], methods=small).attribute(x, target=target)
    with pytest.raises(TypeError, match="memory_budget is a number of bytes"):
        cls(model, model[4], memory_budget=1.5)


class Tokens(nn.Module):
    """A ViT-like model: a 4x4 grid of 6-dim tokens, the layer gives ``(N, 16, 6)``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(3, 6, 4, stride=4)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        tokens = self.norm(self.embed(x).flatten(2).transpose(1, 2))
        return self.head(tokens.mean(dim=1))


def test_ablation_of_a_token_layer_is_refused_and_score_cam_reads_its_grid():
    """LayerCams reads the tokens as a grid; Score-CAM's masks come from it, but Ablation-CAM
    would write a grid back where the model has tokens: refused, naming the way out."""
    model = Tokens().double().eval()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    tokens_to_grid = lambda t: t.transpose(1, 2).reshape(len(t), 6, 4, 4)  # noqa: E731
    cams = LayerCams(model, model.norm, methods=["Score-CAM"], layout=tokens_to_grid)
    found = cams.attribute(x, target=[0, 2])["Score-CAM"]

    class Grid(nn.Module):  # the same model with the grid as the layer's output
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Identity()

        def forward(self, t):
            tokens = model.norm(model.embed(t).flatten(2).transpose(1, 2))
            grid = self.layer(tokens_to_grid(tokens))
            return model.head(grid.flatten(2).mean(dim=2))

    grid = Grid()
    expected = ref.score_cam(grid, grid.layer, x, [0, 2])
    np.testing.assert_allclose(found.numpy(), expected, rtol=1e-10, atol=1e-12)
    cams = LayerCams(model, model.norm, methods=["Ablation-CAM"], layout=tokens_to_grid)
    with pytest.raises(ValueError, match=r"layer's output, which is \(1, 16, 6\), not the chan"):
        cams.attribute(x, target=[0, 2])


def test_constant_channels_share_one_forward_of_the_blank_image(case):
    """Dead channels (constant, here 0) mask the whole image: one forward per image scores
    them all, and the map is still the reference's (each keeps its weight in the softmax)."""
    model, x, target = case
    model64 = copy.deepcopy(model).double()
    with torch.no_grad():  # channels 1 and 3 of the layer are dead: ReLU of a negative bias
        model64[3].weight[[1, 3]] = 0.0
        model64[3].bias[[1, 3]] = -1.0
    seen = []
    method = LayerScoreCam(model64, model64[4], progress=lambda d, t: seen.append((d, t)))
    cam = method.attribute(x.double(), target=target)
    expected = ref.score_cam(model64, model64[4], x, target)
    np.testing.assert_allclose(cam.numpy(), expected, rtol=1e-10, atol=1e-12)
    assert seen[-1] == (12, 12)  # 3 images x (3 live channels + 1 blank image), not 15 rows


def test_a_one_position_layer_masks_nothing_and_weighs_its_channels_alike():
    """A (N, C, 1, 1) layer: every channel is constant, so every mask is H = 0 and the
    weights are the uniform 1/C, however its bilinear upsampling rounds (min-max normalising
    that rounding noise would make masks of it)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 5, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)
    ).double()
    x = torch.rand(2, 3, 9, 9, dtype=torch.float64)
    cam = LayerScoreCam(model, model[2]).attribute(x, target=[0, 1])
    A, _ = ref.capture_layer(model, model[2], x, [0, 1])
    torch.testing.assert_close(cam, A.mean(dim=1, keepdim=True), rtol=1e-12, atol=1e-15)
    expected = ref.score_cam(model, model[2], x, [0, 1])
    np.testing.assert_allclose(cam.numpy(), expected, rtol=1e-12, atol=1e-15)
