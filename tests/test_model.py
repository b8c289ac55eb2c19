"""create_model: shapes, gradients, shared layers, local pretrained weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from fashattr.config import ModelConfig
from fashattr.errors import ConfigError
from fashattr.models import create_model
from fashattr.schema import ai6126_schema

SCHEMA = ai6126_schema()


@pytest.mark.parametrize("layers", [0, 2])
def test_forward_shapes_and_every_parameter_gets_a_gradient(layers: int):
    model = create_model(
        ModelConfig(backbone="test_resnet", head_layers=layers, head_width=16, head_dropout=0.1), SCHEMA
    )
    out = model(torch.randn(3, 3, 32, 32))
    assert list(out) == SCHEMA.names
    assert {g: tuple(v.shape) for g, v in out.items()} == {g.name: (3, g.num_classes) for g in SCHEMA.groups}
    assert isinstance(model.heads, torch.nn.ModuleDict)
    sum(v.sum() for v in out.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert sum(isinstance(m, torch.nn.Linear) for m in model.shared) == layers


def test_unknown_backbone_suggests():
    with pytest.raises(ValueError, match="resnet18"):
        create_model(ModelConfig(backbone="resnt18"), SCHEMA)


def test_pretrained_file_safetensors_and_pth(tmp_path: Path):
    source = timm.create_model("test_resnet", num_classes=10)  # a classifier head the backbone drops
    state = {k: v.clone() for k, v in source.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        model = create_model(ModelConfig(backbone="test_resnet", pretrained_file=str(tmp_path / name)), SCHEMA)
        own = model.backbone.state_dict()
        for k, v in own.items():
            assert torch.equal(v, state[k]), k


def test_pretrained_file_that_does_not_fit(tmp_path: Path):
    other = timm.create_model("resnet10t", num_classes=0)
    save_file(other.state_dict(), str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match=r"other\.safetensors"):
        create_model(ModelConfig(backbone="test_resnet", pretrained_file=str(tmp_path / "other.safetensors")), SCHEMA)
    with pytest.raises(ConfigError, match=r"weights file '.*nope\.pth' not found"):
        create_model(ModelConfig(backbone="test_resnet", pretrained_file=str(tmp_path / "nope.pth")), SCHEMA)


def test_pth_with_pickled_objects_is_refused(tmp_path: Path):
    torch.save({"state_dict": {}, "evil": Path("x")}, tmp_path / "evil.pth")
    with pytest.raises(Exception, match=r"(?i)weights_only|Unsupported"):
        create_model(ModelConfig(backbone="test_resnet", pretrained_file=str(tmp_path / "evil.pth")), SCHEMA)
