"""Heads are sized by what the backbone returns, also for models with a head conv after pooling."""

from __future__ import annotations

import pytest
import torch

from fashattr.config import ModelConfig
from fashattr.models import create_model
from fashattr.schema import ai6126_schema


@pytest.mark.parametrize("backbone", ["mobilenetv3_small_050", "resnet10t"])
def test_heads_take_the_backbones_output_width(backbone: str):
    schema = ai6126_schema()
    model = create_model(ModelConfig(backbone=backbone), schema).eval()
    width = model.backbone(torch.zeros(2, 3, 32, 32)).shape[1]
    assert all(head.in_features == width for head in model.heads.values())
    out = model(torch.zeros(2, 3, 32, 32))
    assert {g: tuple(v.shape) for g, v in out.items()} == {g.name: (2, g.num_classes) for g in schema.groups}
