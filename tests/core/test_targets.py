"""captum_camplus.targets: forward-function wrappers that give (N, K) scores, and the one rule
for an int target on an output that is not (N, K)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from captum.attr import LayerGradCam as CaptumLayerGradCam
from torch import nn

from captum_camplus import METHODS, LayerCams, LayerGradCam, PerturbationCam
from captum_camplus.registry import FAMILIES
from captum_camplus.targets import OutputSelect, SegmentationScores, SimilarityScores, output_tensor

CLASSES = 3
SIZE = 16  # input height and width
#: float64 deviations measured by the reference tests, reported by test_report_deviations
DEVIATIONS: dict[str, float] = {}


class TinySegmenter(nn.Module):
    """(N, 3, 16, 16) -> (N, K, 16 / downsample, 16 / downsample) logits; ``wrap`` wraps them."""

    def __init__(self, downsample: int = 1, wrap=None) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.layer = nn.Conv2d(6, 8, 3, padding=1)
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(8, CLASSES, 1))
        self.pool = nn.AvgPool2d(downsample) if downsample > 1 else nn.Identity()
        self.wrap = wrap

    def forward(self, x):
        logits = self.pool(self.head(self.layer(self.features(x))))
        return logits if self.wrap is None else self.wrap(logits)


class TinyEncoder(nn.Module):
    """(N, 3, 16, 16) -> (N, 5) embeddings; ``wrap`` wraps them."""

    def __init__(self, wrap=None) -> None:
        super().__init__()
        self.layer = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 5)
        self.wrap = wrap

    def forward(self, x):
        embedding = self.head(torch.relu(self.layer(x)).mean(dim=(2, 3)))
        return embedding if self.wrap is None else self.wrap(embedding)


@dataclasses.dataclass
class LogitsOutput:
    """An attribute-style output with ``.logits`` (what a Hugging Face ModelOutput offers)."""

    logits: torch.Tensor
    hidden: torch.Tensor | None = None


def _seeded(module: nn.Module, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(0)
    for parameter in module.parameters():
        nn.init.normal_(parameter, std=0.5)
    return module.to(dtype).eval()


def _images(batch: int = 2, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).to(dtype)


def _relative_error(actual: torch.Tensor, expected: np.ndarray) -> float:
    return float(np.abs(actual.detach().numpy() - expected).max() / np.abs(expected).max())


# --- the formulas, against float64 loops --------------------------------------------------------


def _softmax64(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _segmentation_reference(logits: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """S[n, k] = sum_ij m[n, ij] p[n, k, ij] / sum_ij m[n, ij], with explicit loops."""
    probabilities = _softmax64(logits)
    batch, classes, height, width = logits.shape
    scores = np.zeros((batch, classes))
    for n in range(batch):
        for k in range(classes):
            total, pixels = 0.0, 0.0
            for i in range(height):
                for j in range(width):
                    if mask is None:
                        weight = float(np.argmax(logits[n, :, i, j]) == k)
                    else:
                        weight = float(mask[n, i, j])
                    total += weight * probabilities[n, k, i, j]
                    pixels += weight
            scores[n, k] = total / pixels if pixels else 0.0
    return scores


def _random_mask(batch: int, size: int, seed: int = 2) -> torch.Tensor:
    mask = torch.rand(batch, size, size, generator=torch.Generator().manual_seed(seed)) > 0.6
    mask[:, 0, 0] = True  # never empty
    return mask


@pytest.mark.parametrize("with_mask", [False, True], ids=["predicted", "mask"])
def test_segmentation_scores_follow_the_formula(with_mask):
    model = _seeded(TinySegmenter())
    images = _images()
    mask = _random_mask(2, SIZE) if with_mask else None
    scores = SegmentationScores(model, mask)(images)
    logits = model(images).detach().numpy()
    expected = _segmentation_reference(logits, None if mask is None else mask.numpy())
    assert scores.shape == (2, CLASSES)
    DEVIATIONS[f"SegmentationScores ({'mask' if with_mask else 'predicted'})"] = _relative_error(
        scores, expected
    )
    np.testing.assert_allclose(scores.detach().numpy(), expected, rtol=1e-12, atol=1e-14)


def test_a_mask_at_the_input_size_is_resized_nearest_to_the_logits():
    model = _seeded(TinySegmenter(downsample=4))  # logits at 1/4 of the input, as in HF models
    images = _images()
    mask = _random_mask(1, SIZE)[0]  # (H, W), for every example
    mask[::4, ::4] |= torch.eye(SIZE // 4, dtype=torch.bool)  # not empty at 4x4
    scores = SegmentationScores(model, mask)(images)
    logits = model(images).detach().numpy()
    nearest = np.broadcast_to(mask.numpy()[::4, ::4], (2, SIZE // 4, SIZE // 4))
    expected = _segmentation_reference(logits, nearest)
    DEVIATIONS["SegmentationScores (resized mask)"] = _relative_error(scores, expected)
    np.testing.assert_allclose(scores.detach().numpy(), expected, rtol=1e-12, atol=1e-14)
    # the same mask given at the logits' size gives the same scores
    torch.testing.assert_close(SegmentationScores(model, mask[::4, ::4])(images), scores)


def test_similarity_scores_follow_the_formula():
    encoder = _seeded(TinyEncoder())
    images = _images(3)
    references = torch.randn(4, 5, generator=torch.Generator().manual_seed(3)).double()
    scores = SimilarityScores(encoder, references)(images)
    embedding = encoder(images).detach().numpy()
    expected = np.zeros((3, 4))
    for n in range(3):
        for k in range(4):
            e, r = embedding[n], references[k].numpy()
            expected[n, k] = float(e @ r) / (np.sqrt(e @ e) * np.sqrt(r @ r))
    DEVIATIONS["SimilarityScores"] = _relative_error(scores, expected)
    np.testing.assert_allclose(scores.detach().numpy(), expected, rtol=1e-12, atol=1e-14)


# --- outputs: dicts, tuples, ModelOutputs -------------------------------------------------------


@pytest.mark.parametrize(
    ("wrap", "key"),
    [
        (lambda t: {"out": t, "aux": t * 0}, None),
        (lambda t: {"seg": t}, "seg"),
        (lambda t: LogitsOutput(t), None),
        (lambda t: (t * 0, t), 1),
    ],
    ids=["torchvision dict", "dict key", "logits attribute", "tuple"],
)
def test_segmentation_reads_dicts_tuples_and_logits(wrap, key):
    images = _images()
    plain = SegmentationScores(_seeded(TinySegmenter()))(images)
    wrapped = SegmentationScores(_seeded(TinySegmenter(wrap=wrap)), key=key)(images)
    torch.testing.assert_close(wrapped, plain, rtol=0, atol=0)


def test_hugging_face_segmenter_output():
    outputs = pytest.importorskip("transformers.modeling_outputs")
    wrap = lambda t: outputs.SemanticSegmenterOutput(logits=t)  # noqa: E731
    images = _images()
    plain = SegmentationScores(_seeded(TinySegmenter(downsample=4)), _random_mask(2, SIZE))
    wrapped = SegmentationScores(
        _seeded(TinySegmenter(downsample=4, wrap=wrap)), _random_mask(2, SIZE)
    )
    torch.testing.assert_close(wrapped(images), plain(images), rtol=0, atol=0)
    selected = OutputSelect(_seeded(TinySegmenter(wrap=wrap)), "logits")(images)
    torch.testing.assert_close(selected, _seeded(TinySegmenter())(images), rtol=0, atol=0)


def test_similarity_reads_embedding_fields():
    references = torch.randn(2, 5, generator=torch.Generator().manual_seed(3)).double()
    images = _images()
    plain = SimilarityScores(_seeded(TinyEncoder()), references)(images)
    for wrap, key in [
        (lambda t: {"image_embeds": t, "last_hidden_state": t[:, None]}, None),
        (lambda t: {"pooler_output": t}, None),
        (lambda t: LogitsOutput(t), None),
        (lambda t: {"embedding": t}, "embedding"),
    ]:
        wrapped = SimilarityScores(_seeded(TinyEncoder(wrap=wrap)), references, key=key)
        torch.testing.assert_close(wrapped(images), plain, rtol=0, atol=0)


def test_output_select():
    images = _images()
    model = _seeded(TinyEncoder(wrap=lambda t: {"a": t * 2, "b": t}))
    torch.testing.assert_close(OutputSelect(model, "b")(images), _seeded(TinyEncoder())(images))
    tupled = _seeded(TinyEncoder(wrap=lambda t: (t * 2, t)))
    torch.testing.assert_close(OutputSelect(tupled, 1)(images), _seeded(TinyEncoder())(images))
    attributes = _seeded(TinyEncoder(wrap=LogitsOutput))
    torch.testing.assert_close(
        OutputSelect(attributes, "logits")(images), _seeded(TinyEncoder())(images)
    )


def test_output_errors_name_the_problem_and_the_keys():
    logits = torch.zeros(1, 2)
    with pytest.raises(KeyError, match="key 'aux' is not in the output; it has: 'out'"):
        output_tensor({"out": logits}, "aux")
    with pytest.raises(KeyError, match="key 'scores' is not in the output; it has: 'logits'"):
        output_tensor(LogitsOutput(logits), "scores")
    with pytest.raises(IndexError, match="position 2 is outside the output, a tuple of 2"):
        output_tensor((logits, logits), 2)
    with pytest.raises(TypeError, match="select with an int position"):
        output_tensor((logits, logits), "out")
    with pytest.raises(TypeError, match="select with a name"):
        output_tensor({"out": logits}, 0)
    with pytest.raises(TypeError, match="pass key=, the position"):
        output_tensor((logits,))
    with pytest.raises(KeyError, match="none of 'logits' is in .*it has: 'seg': pass key="):
        output_tensor({"seg": logits})
    with pytest.raises(TypeError, match="the output's 'out' is str, not a tensor"):
        output_tensor({"out": "x"}, "out")
    images = _images()
    with pytest.raises(KeyError, match="key 'aux' is not in the output; it has: 'out'"):
        OutputSelect(_seeded(TinySegmenter(wrap=lambda t: {"out": t})), "aux")(images)
    with pytest.raises(TypeError, match="returns a tensor of shape .* pass the model itself"):
        OutputSelect(_seeded(TinySegmenter()), "out")(images)
    with pytest.raises(TypeError, match="key must be a name"):
        OutputSelect(_seeded(TinySegmenter()), 1.5)  # type: ignore[arg-type]


def test_segmentation_errors():
    model = _seeded(TinySegmenter(downsample=4))
    images = _images()
    with pytest.raises(ValueError, match=r"mask must be \(H, W\) or \(N, H, W\)"):
        SegmentationScores(model, torch.ones(1, 1, SIZE, SIZE, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        SegmentationScores(model, torch.full((SIZE, SIZE), 2.0))
    with pytest.raises(ValueError, match=r"the mask is empty for example\(s\) \[1\]"):
        SegmentationScores(model, torch.stack([torch.ones(SIZE, SIZE), torch.zeros(SIZE, SIZE)]))
    with pytest.raises(ValueError, match="the mask is empty for example"):
        SegmentationScores(model, torch.zeros(SIZE, SIZE, dtype=torch.bool))
    with pytest.raises(ValueError, match="neither the input's size .16x16. nor the logits' .4x4."):
        SegmentationScores(model, torch.ones(8, 8))(images)
    with pytest.raises(ValueError, match="the mask holds 3 examples for a batch of 2"):
        SegmentationScores(model, torch.ones(3, SIZE, SIZE))(images)
    corner = torch.zeros(SIZE, SIZE)
    corner[1, 1] = 1  # nearest resizing to 4x4 reads pixels (0, 0), (0, 4), ... only
    with pytest.raises(ValueError, match="empty after resizing .nearest. to the logits' 4x4"):
        SegmentationScores(model, corner)(images)
    with pytest.raises(ValueError, match=r"needs \(N, K, h, w\) logits, the model returns"):
        SegmentationScores(_seeded(TinyEncoder()))(images)


def test_similarity_errors():
    encoder = _seeded(TinyEncoder())
    images = _images()
    with pytest.raises(ValueError, match=r"references must be \(K, D\)"):
        SimilarityScores(encoder, torch.ones(5))
    with pytest.raises(ValueError, match=r"references row\(s\) \[1\] are zero"):
        SimilarityScores(encoder, torch.stack([torch.ones(5), torch.zeros(5)]))
    with pytest.raises(ValueError, match="NaN or inf"):
        SimilarityScores(encoder, torch.full((1, 5), float("nan")))
    with pytest.raises(ValueError, match=r"embedding has shape \(2, 5\), but the references need"):
        SimilarityScores(encoder, torch.ones(2, 4))(images)


def test_a_class_with_no_predicted_pixel_scores_zero_with_finite_gradients():
    model = _seeded(TinySegmenter())
    with torch.no_grad():  # class 2 is never predicted
        model.head[1].bias.copy_(torch.tensor([0.0, 0.0, -1e3], dtype=torch.float64))
    images = _images().requires_grad_()
    scores = SegmentationScores(model)(images)
    assert torch.equal(scores[:, 2], torch.zeros(2, dtype=torch.float64))
    (gradient,) = torch.autograd.grad(scores[:, 2].sum(), images)
    assert torch.isfinite(gradient).all()
    assert not gradient.any()
    with pytest.warns(UserWarning, match="gradient is exactly zero"):
        maps = LayerGradCam(SegmentationScores(model), model.layer).attribute(images, target=2)
    assert torch.equal(maps, torch.zeros_like(maps))


# --- CAMs through the wrappers ------------------------------------------------------------------


def _wrapped_cases():
    segmenter = _seeded(TinySegmenter())
    small = _seeded(TinySegmenter(downsample=4, wrap=lambda t: {"out": t}))
    encoder = _seeded(TinyEncoder(wrap=lambda t: {"image_embeds": t}))
    references = torch.randn(3, 5, generator=torch.Generator().manual_seed(3)).double()
    return {
        "SegmentationScores (predicted)": (SegmentationScores(segmenter), segmenter.layer),
        "SegmentationScores (mask)": (
            SegmentationScores(small, _random_mask(2, SIZE)),
            small.layer,
        ),
        "SimilarityScores": (SimilarityScores(encoder, references), encoder.layer),
        "OutputSelect": (OutputSelect(encoder, "image_embeds"), encoder.layer),
    }


@pytest.mark.parametrize("case", list(_wrapped_cases()))
def test_grad_cam_through_each_wrapper_equals_captums(case):
    wrapped, layer = _wrapped_cases()[case]
    images = _images()
    for target in (0, [1, 2]):
        ours = LayerGradCam(wrapped, layer).attribute(images, target=target)
        captums = CaptumLayerGradCam(wrapped, layer).attribute(images, target=target).detach()
        scale = float(captums.abs().max())
        assert scale > 0
        DEVIATIONS[f"Grad-CAM vs Captum, {case}"] = max(
            DEVIATIONS.get(f"Grad-CAM vs Captum, {case}", 0.0),
            float((ours - captums).abs().max()) / scale,
        )
        torch.testing.assert_close(ours, captums, rtol=1e-6, atol=1e-6 * scale)


def test_every_gradient_method_through_layer_cams_equals_its_class():
    """The gradient family; the perturbation family's masked forwards hold other rows than the
    wrapper's per-example masks (their LayerCams test: test_catalogue_perturbation.py)."""
    model = _seeded(TinySegmenter(downsample=4, wrap=lambda t: {"out": t}))
    wrapped = SegmentationScores(model, _random_mask(2, SIZE))
    images = _images()
    gradient = FAMILIES["gradient"]
    for options in ({}, {"attribute_to_layer_input": True}):  # the capture and Captum's pass
        maps = LayerCams(wrapped, model.layer, methods=list(gradient)).attribute(
            images, target=[0, 2], **options
        )
        assert list(maps) == list(gradient)
        for name, method in gradient.items():
            alone = method(wrapped, model.layer).attribute(images, target=[0, 2], **options)
            torch.testing.assert_close(maps[name], alone)


# --- an int target on an output that is not (N, K) ----------------------------------------------

ONE_SCORE = r"picks 256 scores per example .*targets\.SegmentationScores\(model\)"


@pytest.mark.parametrize(
    "target",
    [1, [0, 1], torch.tensor(1), torch.tensor([0, 1]), (1,)],
    ids=["int", "list", "scalar tensor", "1-D tensor", "short tuple"],
)
def test_a_target_that_picks_many_scores_is_refused_by_every_class(target):
    model = _seeded(TinySegmenter())
    images = _images()
    attributions = [method(model, model.layer) for method in METHODS.values()]
    for options in ({}, {"attribute_to_layer_input": True}):
        for attribution in [*attributions, LayerCams(model, model.layer)]:
            if options and isinstance(attribution, PerturbationCam):
                continue  # they weight the layer's output only (refused, tested on its own)
            with pytest.raises(ValueError, match=ONE_SCORE):
                attribution.attribute(images, target=target, **options)


@pytest.mark.parametrize("target", [[0, 1], torch.tensor([0, 1])], ids=["list", "1-D tensor"])
def test_per_example_indices_need_2d_scores(target):
    model = _seeded(TinyEncoder(wrap=lambda t: t[:, :, None]))  # (N, 5, 1): one score each
    images = _images()
    torch.testing.assert_close(  # an int still picks the one score, as in Captum
        LayerCams(model, model.layer).attribute(images, target=1)["Grad-CAM"],
        CaptumLayerGradCam(model, model.layer).attribute(images, target=1).detach(),
    )
    for attribution in [LayerGradCam(model, model.layer), LayerCams(model, model.layer)]:
        with pytest.raises(ValueError, match=r"per-example class indices needs \(N, classes\)"):
            attribution.attribute(images, target=target)


def test_a_tuple_target_still_picks_one_element_as_in_captum():
    model = _seeded(TinySegmenter())
    images = _images()
    maps = LayerCams(model, model.layer, methods=["all"]).attribute(images, target=(1, 3, 4))
    for name, method in METHODS.items():
        alone = method(model, model.layer).attribute(images, target=(1, 3, 4))
        torch.testing.assert_close(maps[name], alone)
    captums = CaptumLayerGradCam(model, model.layer).attribute(images, target=(1, 3, 4))
    torch.testing.assert_close(maps["Grad-CAM"], captums.detach())
    per_example = [(1, 3, 4), (2, 0, 0)]
    torch.testing.assert_close(
        LayerGradCam(model, model.layer).attribute(images, target=per_example),
        CaptumLayerGradCam(model, model.layer).attribute(images, target=per_example).detach(),
    )


# --- a torchvision segmentation model -----------------------------------------------------------


def test_torchvision_lraspp_through_segmentation_scores():
    segmentation = pytest.importorskip("torchvision.models.segmentation")
    torch.manual_seed(0)
    model = (
        segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)
        .double()
        .eval()
    )
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)).double()
    layer = model.backbone["16"]
    centre = torch.zeros(64, 64, dtype=torch.bool)
    centre[16:48, 16:48] = True
    wrapped = SegmentationScores(model, centre)  # the dict's "out", upsampled to 64x64
    maps = LayerGradCam(wrapped, layer).attribute(images, target=1)
    assert maps.shape == (2, 1, 4, 4)
    assert torch.isfinite(maps).all()
    captums = CaptumLayerGradCam(wrapped, layer).attribute(images, target=1).detach()
    scale = float(captums.abs().max())
    assert scale > 0
    DEVIATIONS["Grad-CAM vs Captum, torchvision LR-ASPP"] = float(
        (maps - captums).abs().max() / scale
    )
    torch.testing.assert_close(maps, captums, rtol=1e-6, atol=1e-6 * scale)
    dict_output = r"the model returns OrderedDict.*OutputSelect\(model, key\)"
    with pytest.raises(TypeError, match=dict_output):
        LayerGradCam(model, layer).attribute(images, target=1)


def test_report_deviations(capsys):
    """Prints the deviations measured above (run with -s to see them)."""
    with capsys.disabled():
        for name, deviation in DEVIATIONS.items():
            print(f"\n{name}: max relative deviation {deviation:.2e}")
