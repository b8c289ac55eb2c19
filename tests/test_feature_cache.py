"""train.feature_cache: a frozen backbone's features computed once, cached by content, the heads trained on them."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from safetensors.torch import load_file

from fashattr.config import load_config
from fashattr.engine.features import VIEWS, cached_features, content_key
from fashattr.engine.trainer import fit
from fashattr.errors import ConfigError
from fashattr.models import create_model
from fashattr.predictor import eval_run
from fashattr.schema import ai6126_schema

PROBE = {"train.trainable_stages": 0, "train.feature_cache": True, "train.epochs": 4, "model.drop_rate": 0.2}


def test_cached_features_are_the_backbones_output_for_each_view(tmp_path: Path):
    torch.manual_seed(0)
    model = create_model(load_config(None, ["model.backbone=test_resnet"]).model, ai6126_schema()).eval()
    images = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    cpu = torch.device("cpu")
    feats = cached_features(model.backbone, images, mean, std, VIEWS, cpu, str(tmp_path), batch_size=4)
    x = (
        torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)
    ) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.stack([model.backbone(x), model.backbone(x.flip(3))])
    assert feats.shape == (2, 10, model.backbone.num_features)
    assert (feats - expected).abs().max().item() < 1e-4
    files = list((tmp_path / "features").glob("*.npy"))
    assert len(files) == 1
    # the same pixels, weights and views: read back, not recomputed (the file is left as it was)
    stamp = files[0].stat().st_mtime_ns
    again = cached_features(model.backbone, images, mean, std, VIEWS, cpu, str(tmp_path))
    assert torch.equal(again, feats) and files[0].stat().st_mtime_ns == stamp
    # other weights, other normalisation, other pixels: other keys
    key = content_key(images, model.backbone, mean, std, VIEWS)
    assert content_key(images, model.backbone, (0.5,) * 3, std, VIEWS) != key
    assert content_key(images[::-1].copy(), model.backbone, mean, std, VIEWS) != key
    with torch.no_grad():
        next(model.backbone.parameters()).mul_(2)
    assert content_key(images, model.backbone, mean, std, VIEWS) != key


def test_a_feature_cache_run_selects_on_numbers_the_saved_weights_reproduce(
    tiny_data: Path, cache_dir: Path, tmp_path: Path
):
    """Its per-epoch selection metrics (heads on cached features) equal `fashattr eval` of its weights on pixels."""
    cfg = load_config(None, tiny_overrides(tiny_data, cache_dir, tmp_path, **PROBE, name="probe"))
    run = fit(cfg)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == 4
    last = eval_run(run, "holdout", weights="last", decode="none")
    assert float(rows[-1]["avg_class_acc"]) == pytest.approx(last.avg_class_acc, abs=1e-9)
    assert float(rows[-1]["overall_acc"]) == pytest.approx(last.overall_acc, abs=1e-9)
    # the backbone never changed: the saved weights hold the initial backbone, the heads trained
    torch.manual_seed(cfg.train.seed)  # the trainer draws its initial weights so
    init = create_model(cfg.model, ai6126_schema(), cfg.data.image_size)
    saved = load_file(str(run / "last.safetensors"))
    for k, v in init.state_dict().items():
        if k.startswith("backbone."):
            assert torch.equal(saved[k], v), k
    assert not torch.equal(saved["heads.pattern.weight"], init.state_dict()["heads.pattern.weight"])
    log = (run / "train.log").read_text()
    assert "features: computing" in log


def test_a_feature_cache_run_resumes_exactly(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    over = tiny_overrides(tiny_data, cache_dir, tmp_path, **PROBE, **{"train.ema_decay": 0.9})
    whole = fit(load_config(None, [*over, "name=whole"]))

    class Stop(Exception):
        pass

    def stop_after_two(epoch: int, _: dict) -> None:
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(load_config(None, [*over, "name=cut"]), on_epoch=stop_after_two)
    cut = fit(resume=tmp_path / "cut")
    a, b = load_file(str(whole / "last.safetensors")), load_file(str(cut / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = ("epoch_s", "train_img_s")
    rows = [
        [{k: v for k, v in r.items() if k not in strip} for r in csv.DictReader((f / "metrics.csv").open())]
        for f in (whole, cut)
    ]
    assert rows[0] == rows[1]
    assert "features: " in (cut / "train.log").read_text() and "(cached)" in (cut / "train.log").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"train.trainable_stages": 2}, r"set train.trainable_stages=0 \(it is 2\)"),
        (
            {"augment.rrc": 0.5, "augment.degrees": 10},
            r"only augment.hflip applies; unset augment.degrees=10.0, augment.rrc=0.5",
        ),
    ],
)
def test_feature_cache_refuses_what_cached_features_cannot_do(extra: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"{k}={v}" for k, v in {**PROBE, **extra}.items()])
