"""TumorResNetFCN: MONAI TorchVisionFCModel compatibility and --pretrained weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from wsi_tumor.errors import ConfigError
from wsi_tumor.models.resnet_fcn import build_model
from wsi_tumor.training.checkpoint import load_pretrained, pretrained_path


def _monai_key_set() -> set[str]:
    """Keys of TorchVisionFCModel("resnet18", num_classes=1, use_conv=True), by hand.

    MONAI's NetAdapter keeps torchvision's children up to (and without) avgpool and fc as
    ``features`` (a Sequential, so indices 0..7), then ``pool`` (no parameters) and ``fc``.
    """
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    keys = set()
    for key in resnet18(weights=None).state_dict():
        head, _, rest = key.partition(".")
        if head in names:
            keys.add(f"features.{names.index(head)}.{rest}")
    return keys | {"fc.weight", "fc.bias"}


def test_state_dict_matches_monai_layout() -> None:
    state = build_model().state_dict()
    assert set(state) == _monai_key_set()
    assert tuple(state["fc.weight"].shape) == (1, 512, 1, 1)


def test_monai_torchvision_fc_model_loads_ours_strict() -> None:
    from monai.networks import nets

    torch.manual_seed(0)
    ours = build_model().eval()
    theirs = nets.TorchVisionFCModel(
        "resnet18", num_classes=1, use_conv=True, pretrained=False
    ).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert a.shape == b.shape == (2, 1, 1, 1)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # and back: MONAI's weights load into ours
    ours.load_state_dict(theirs.state_dict(), strict=True)


def test_pretrained_missing_names_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"hub/checkpoints/resnet18-[0-9a-f]+\.pth"):
        load_pretrained(build_model())


def test_pretrained_maps_torchvision_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(1)
    source = resnet18(weights=None)
    path = pretrained_path()
    path.parent.mkdir(parents=True)
    torch.save(source.state_dict(), path)
    model = build_model()
    fc_before = model.fc.weight.clone()
    load_pretrained(model)
    torch.testing.assert_close(model.features[0].weight, source.conv1.weight)
    state = model.state_dict()
    torch.testing.assert_close(
        state["features.7.1.bn2.running_var"], source.layer4[1].bn2.running_var
    )
    torch.testing.assert_close(model.fc.weight, fc_before)  # the classifier stays random
    # the features compute exactly torchvision's trunk
    source.eval()
    model.eval()
    x = torch.randn(1, 3, 224, 224)
    trunk = torch.nn.Sequential(*list(source.children())[:-2])
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), trunk(x))
