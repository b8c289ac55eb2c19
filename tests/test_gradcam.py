"""Grad-CAM per head: a hand-computed case, the layer chosen per backbone family (CNN and ViT),
per-image independence inside a batch, and the overlay."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fashattr.config import ModelConfig
from fashattr.models.model import AttributeModel, create_model
from fashattr.report.gradcam import gradcam, gradcam_pixels, overlay, target_layer
from fashattr.schema import Schema

SCHEMA = Schema.from_dict(
    {
        "groups": [
            {"name": "sleeve", "classes": ["long", "short", "none"]},
            {"name": "style", "classes": ["a", "b", "c", "d"], "kind": "multi"},
        ]
    }
)


class SumConv(nn.Module):
    """A backbone whose one feature map is the sum of the input's channels, then average-pooled."""

    num_features = 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1, bias=False)
        nn.init.ones_(self.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


def test_hand_computed_map_is_the_feature_map_for_a_positive_weight_and_zero_for_a_negative() -> None:
    # score_c = w_c * mean(A) + b, so dscore/dA = w_c / (h*w) everywhere: Grad-CAM = relu(w_c/(hw) * A),
    # scaled to max 1 -> A / max(A) when w_c > 0, and all zeros when w_c < 0.
    model = AttributeModel(SumConv(), SCHEMA, ModelConfig()).eval()
    with torch.no_grad():
        model.heads["sleeve"].weight.copy_(torch.tensor([[2.0], [-1.0], [0.5]]))
        model.heads["sleeve"].bias.zero_()
    x = torch.zeros(1, 3, 8, 8)
    x[0, :, 1:3, 1:4] = 1.0  # a bright patch, top left
    x[0, 0, 6, 6] = 0.5  # a dim pixel in one channel
    assert target_layer(model)[1] == "backbone.conv"
    maps = gradcam(model, x, targets={"sleeve": [0]})
    a = x[0].sum(0).numpy()
    np.testing.assert_allclose(maps["sleeve"][0], a / a.max(), atol=1e-6)
    assert np.all(gradcam(model, x, targets={"sleeve": [1]})["sleeve"] == 0)
    assert set(maps) == {"sleeve", "style"} and maps["style"].shape == (1, 8, 8)


@pytest.mark.parametrize(
    ("backbone", "layer", "size"),
    [("test_resnet", "backbone.layer4", 48), ("test_vit", "backbone.blocks.", 32)],
)
def test_each_family_gets_its_layer_and_a_map_per_group_per_image(backbone: str, layer: str, size: int) -> None:
    torch.manual_seed(0)
    model = create_model(ModelConfig(backbone=backbone), SCHEMA, image_size=size).eval()
    name = target_layer(model)[1]
    assert name.startswith(layer)
    if "vit" in backbone:
        assert name.endswith(".norm1")  # not the last block's output: its patch tokens get no gradient
    x = torch.randn(3, 3, size, size)
    maps = gradcam(model, x)
    for g in ("sleeve", "style"):
        m = maps[g]
        assert m.shape == (3, size, size) and m.dtype == np.float32
        assert np.isfinite(m).all() and m.min() >= 0 and m.max() <= 1 + 1e-6
        assert m.reshape(3, -1).max(1).min() > 0.99  # every image has evidence somewhere, scaled to 1
    # An image's map does not depend on the others in its batch (eval mode).
    alone = gradcam(model, x[1:2])
    np.testing.assert_allclose(alone["sleeve"][0], maps["sleeve"][1], atol=1e-5)
    # Explaining another class changes the map.
    other = gradcam(model, x, targets={"sleeve": [(int(k) + 1) % 3 for k in model(x)["sleeve"].argmax(1)]})
    assert not np.allclose(other["sleeve"], maps["sleeve"])


def test_frozen_backbone_still_gets_a_gradient_at_the_hooked_layer() -> None:
    model = create_model(ModelConfig(backbone="test_resnet"), SCHEMA).eval()
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    maps = gradcam(model, torch.randn(2, 3, 32, 32))
    assert maps["sleeve"].max() > 0.99


def test_pixels_are_normalised_like_the_runtime_and_targets_are_checked() -> None:
    model = create_model(ModelConfig(backbone="test_resnet"), SCHEMA).eval()
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() - torch.tensor(mean).view(1, 3, 1, 1) * 255) / (
        torch.tensor(std).view(1, 3, 1, 1) * 255
    )
    np.testing.assert_allclose(gradcam_pixels(model, mean, std, pixels)["sleeve"], gradcam(model, x)["sleeve"])
    with pytest.raises(ValueError, match="targets\\['sleeve'\\] has 1 entries for 2 images"):
        gradcam(model, x, targets={"sleeve": [0]})


def test_overlay_blends_the_colormap_and_resizes_the_map() -> None:
    image = np.full((20, 30, 3), 100, dtype=np.uint8)
    heat = np.zeros((4, 6), dtype=np.float32)
    heat[:, 3:] = 1.0  # hot on the right
    out = overlay(image, heat, alpha=0.5)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    # jet(1.0) is dark red (127.5, 0, 0); jet(0.0) dark blue (0, 0, 127.5).
    np.testing.assert_allclose(out[10, 29], [114, 50, 50], atol=1)
    np.testing.assert_allclose(out[10, 0], [50, 50, 114], atol=1)
