"""Fine-tuning: timm's stages, freezing, discriminative learning rates and EMA."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_overrides
from safetensors.torch import load_file

from fashattr.config import ConfigError, ModelConfig, OptimConfig, TrainConfig, load_config
from fashattr.engine.finetune import backbone_stages, init_from_run, lr_scales, param_groups, stage_of
from fashattr.engine.trainer import Trainer, create_ema, fit
from fashattr.models import create_model
from fashattr.schema import Group, Schema, ai6126_schema


def test_stages_follow_timms_grouping():
    model = create_model(ModelConfig(backbone="resnet10t"), ai6126_schema())
    stages = backbone_stages(model.backbone)
    assert len(stages) == 5  # stem, layer1..layer4
    assert stages[0][0].startswith("conv1") and all(n.startswith("layer4") for n in stages[4])
    stage, n = stage_of(model)
    assert n == 5 and stage["heads.pattern.weight"] == 5 and stage["backbone.layer2.0.conv1.weight"] == 2


def test_a_final_norm_trains_with_the_heads():
    model = create_model(ModelConfig(backbone="eva02_tiny_patch14_224"), ai6126_schema(), image_size=28)
    stages = backbone_stages(model.backbone)
    assert len(stages) == 13  # patch embedding + 12 blocks; fc_norm goes with the heads
    stage, n = stage_of(model)
    assert stage["backbone.fc_norm.weight"] == n == 13
    assert model.backbone.patch_embed.img_size == (28, 28)  # fixed-input models take the data's size


def test_layer_decay_and_stage_multipliers():
    assert lr_scales(OptimConfig(layer_decay=0.5), 4) == [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0]
    assert lr_scales(OptimConfig(stage_lr=[0.1, 0.2, 0.5]), 3) == [0.1, 0.2, 0.5, 1.0]
    with pytest.raises(ValueError, match="stage_lr has 2 multipliers but this backbone has 3 stages"):
        lr_scales(OptimConfig(stage_lr=[0.1, 0.2]), 3)
    model = create_model(ModelConfig(backbone="resnet10t"), ai6126_schema())
    groups = param_groups(model, OptimConfig(lr=1e-2, layer_decay=0.5, weight_decay=0.1))
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))  # each exactly once
    stem = [g for g in groups if g["stage"] == 0]
    assert [g["lr"] for g in stem] == [pytest.approx(1e-2 / 32)] * 2
    assert {g["weight_decay"] for g in stem} == {0.0, 0.1}  # 1-D tensors without decay


def _backbone(state: dict[str, torch.Tensor], stage: dict[str, int], which: set[int]) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in state.items() if stage.get(k, -1) in which}


def test_freeze_then_unfreeze_the_last_stages(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    over = tiny_overrides(
        tiny_data,
        cache_dir,
        tmp_path,
        **{"model.backbone": "resnet10t", "train.freeze_epochs": 1, "train.trainable_stages": 2},
    )
    trainer = Trainer(load_config(None, over), tmp_path / "run", resume=False)
    stage, n = stage_of(trainer.model)
    # running statistics belong to their module's stage too
    stage.update({k: stage.get(k.rsplit(".", 1)[0] + ".weight", n) for k in trainer.model.state_dict()})
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    trainer.train_one_epoch(time.perf_counter())  # epoch 1: the whole backbone frozen
    after1 = trainer.model.state_dict()
    for k, v in _backbone(before, stage, set(range(n))).items():
        assert torch.equal(v, after1[k]), f"{k} moved while frozen"
    assert not torch.equal(before["heads.pattern.weight"], after1["heads.pattern.weight"])

    trainer.progress.epoch, trainer.progress.step = 1, 0
    mid = {k: v.clone() for k, v in after1.items()}
    trainer.train_one_epoch(time.perf_counter())  # epoch 2: only the last 2 stages train
    after2 = trainer.model.state_dict()
    frozen, thawed = _backbone(mid, stage, {0, 1, 2}), _backbone(mid, stage, {3, 4})
    assert all(torch.equal(v, after2[k]) for k, v in frozen.items())
    assert not torch.equal(mid["backbone.layer4.0.conv1.weight"], after2["backbone.layer4.0.conv1.weight"])
    assert sum(not torch.equal(v, after2[k]) for k, v in thawed.items()) > len(thawed) // 2


def test_group_lrs_keep_their_ratios_through_the_schedule(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    over = tiny_overrides(tiny_data, cache_dir, tmp_path, **{"optim.layer_decay": 0.5, "sched.warmup_epochs": 1})
    trainer = Trainer(load_config(None, over), tmp_path / "run", resume=False)
    for _ in range(9):  # through the warm-up into the cosine
        trainer.optimizer.step()  # no gradients: changes nothing, keeps torch's call order
        trainer.scheduler.step()
        head = next(g["lr"] for g in trainer.optimizer.param_groups if g["stage"] == trainer.n_stages)
        for g in trainer.optimizer.param_groups:
            assert g["lr"] == pytest.approx(head * g["lr_scale"])


def test_ema_weights_are_what_is_evaluated_and_saved(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    over = tiny_overrides(tiny_data, cache_dir, tmp_path, name="ema", **{"train.ema_decay": 0.9, "train.epochs": 1})
    run = fit(load_config(None, over))
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    last = load_file(run / "last.safetensors")
    ema = {k: v for k, v in state["ema"].items() if k in last}
    assert all(torch.equal(last[k], ema[k].contiguous()) for k in last)
    assert not all(torch.equal(last[k], state["model"][k].contiguous()) for k in last)  # not the raw weights
    log = (run / "train.log").read_text()
    assert "0 of 5 backbone stages frozen" in log


def test_ema_warns_when_its_warm_up_never_reaches_the_decay_asked_for(caplog: pytest.LogCaptureFixture):
    """cpu_pretrained's 12 epochs of 126 steps: timm's warm-up, 1 - (1 + step)^(-2/3), ends at 1 - 1512^(-2/3)
    = 0.9924 (an average over ~132 steps), short of 0.998 (~500): said once, with the setting that fixes it."""
    model = torch.nn.Linear(2, 2)
    with caplog.at_level(logging.WARNING, logger="fashattr"):
        ema = create_ema(model, TrainConfig(ema_decay=0.998), steps=1512)
    assert ema is not None and ema.get_decay(1512) == pytest.approx(1 - 1512 ** (-2 / 3))
    assert caplog.messages == [
        "train.ema_decay 0.998 is never reached: the warm-up (train.ema_warmup) ramps it to 0.9924 by the last of "
        "1512 steps, an average over about the last 132 steps instead of 500; train.ema_warmup=false uses 0.998 "
        "from the first step"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fashattr"):
        assert create_ema(model, TrainConfig(ema_decay=0.998, ema_warmup=False), steps=1512).get_decay(2) == 0.998
        create_ema(model, TrainConfig(ema_decay=0.99), steps=1512)  # 0.99 is reached after 1,000 steps
        assert create_ema(model, TrainConfig(ema_decay=0.0), steps=1512) is None
    assert caplog.messages == []


def test_init_from_an_earlier_run_starts_the_whole_model_from_its_weights(
    tiny_data: Path, cache_dir: Path, tmp_path: Path
):
    first = fit(load_config(None, tiny_overrides(tiny_data, cache_dir, tmp_path, name="probe", **{"train.epochs": 1})))
    saved = load_file(first / "best.safetensors")
    over = tiny_overrides(tiny_data, cache_dir, tmp_path, name="next", **{"model.init_from": str(first)})
    trainer = Trainer(load_config(None, over), tmp_path / "next", resume=False)
    state = trainer.model.state_dict()
    assert set(state) == set(saved)  # backbone, heads and BatchNorm statistics, every one
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    # trained on: the summary names the file and its hash
    run = fit(load_config(None, [*over, "train.epochs=1"]))
    record = json.loads((run / "summary.json").read_text())["init_from"]
    assert record["file"] == str(first / "best.safetensors")
    assert record["sha256"] == hashlib.sha256((first / "best.safetensors").read_bytes()).hexdigest()
    # a resumed run takes its weights and this record from its checkpoint: the earlier run may be gone
    (first / "best.safetensors").unlink()
    resumed = Trainer(load_config(None, [*over, "train.epochs=1"]), run, resume=True)
    assert resumed.init_from == record


def test_init_from_refuses_what_does_not_fit(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    first = fit(load_config(None, tiny_overrides(tiny_data, cache_dir, tmp_path, name="probe", **{"train.epochs": 1})))
    schema = ai6126_schema()
    other = Schema(tuple(Group(g.name, (*g.classes, "sequin")) if g.name == "fabric" else g for g in schema.groups))
    with pytest.raises(
        ConfigError, match=r"another schema: group 'fabric': single \[.*'knit'\], not single \[.*'sequin'\]"
    ):
        init_from_run(create_model(ModelConfig(backbone="test_resnet"), other), first, other)
    # a file of another architecture: the tensors are named
    with pytest.raises(
        ConfigError,
        match=r"does not fit this model .*other shape: backbone\.conv1\.0\.weight \(16, 3, 3, 3\) \(needs \(24, 3,",
    ):
        init_from_run(create_model(ModelConfig(backbone="resnet10t"), schema), first / "best.safetensors", schema)
    with pytest.raises(ConfigError, match="not a finished run folder"):
        init_from_run(create_model(ModelConfig(backbone="test_resnet"), schema), tmp_path, schema)
    with pytest.raises(ConfigError, match=r"nowhere\.safetensors does not exist"):
        init_from_run(
            create_model(ModelConfig(backbone="test_resnet"), schema), tmp_path / "nowhere.safetensors", schema
        )
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((first / "best.safetensors").read_bytes()[:100])
    with pytest.raises(ConfigError, match=r"cut\.safetensors: not a readable safetensors file"):
        init_from_run(create_model(ModelConfig(backbone="test_resnet"), schema), cut, schema)
