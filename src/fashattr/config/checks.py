"""Cross-field checks of a loaded config that types alone cannot express."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fashattr.config.sections import AugmentConfig, Config, DataConfig, ModelConfig
from fashattr.errors import ConfigError
from fashattr.weight_sources import is_package_source, package_source


def check(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    if cfg.data.image_size < 8:
        raise ConfigError(f"data.image_size: {cfg.data.image_size} is too small (minimum 8)")
    if cfg.data.eval_size is not None and cfg.data.eval_size < 8:
        raise ConfigError(f"data.eval_size: {cfg.data.eval_size} is too small (minimum 8; null: data.image_size)")
    if cfg.data.eval_split is None and not 0.0 < cfg.data.holdout < 1.0:
        raise ConfigError(f"data.holdout: {cfg.data.holdout} must be in (0, 1) when data.eval_split is null")
    if not 0.0 <= cfg.data.test_holdout < 1.0:
        raise ConfigError(f"data.test_holdout: {cfg.data.test_holdout} must be in [0, 1) (0 = no test holdout)")
    protected = {s for s in (cfg.data.train_split, cfg.data.eval_split, "holdout", "test_holdout") if s}
    clash = sorted(protected & set(cfg.data.unlabeled_splits))
    if clash:
        raise ConfigError(
            f"data.unlabeled_splits {cfg.data.unlabeled_splits} names {clash}"
            ": the training split, the selection split and the holdouts carved from them are never pseudo-labeled"
        )
    _check_background(cfg.data)
    if cfg.train.epochs < 1 or cfg.train.batch_size < 1:
        raise ConfigError("train.epochs and train.batch_size must be at least 1")
    if cfg.model.head_layers < 0:
        raise ConfigError(f"model.head_layers: {cfg.model.head_layers} must be >= 0")
    a = cfg.augment
    for name in ("hflip", "vflip", "rrc", "jitter_p", "grayscale", "blur", "erasing", "mix_prob", "mix_switch_prob"):
        if not 0.0 <= getattr(a, name) <= 1.0:
            raise ConfigError(f"augment.{name}: {getattr(a, name)} is a probability, must be in [0, 1]")
    if not 0.0 <= a.hue <= 0.5:
        raise ConfigError(f"augment.hue: {a.hue} must be in [0, 0.5]")
    if cfg.optim.lr <= 0:
        raise ConfigError(f"optim.lr: {cfg.optim.lr} must be positive")
    if not 0.0 < cfg.optim.layer_decay <= 1.0:
        raise ConfigError(f"optim.layer_decay: {cfg.optim.layer_decay} must be in (0, 1]")
    if cfg.optim.stage_lr is not None and (cfg.optim.layer_decay != 1.0 or min(cfg.optim.stage_lr) <= 0):
        raise ConfigError("optim.stage_lr: positive multipliers, and not together with optim.layer_decay")
    if not 0.0 <= cfg.loss.distill_weight <= 1.0 or cfg.loss.distill_temperature <= 0:
        raise ConfigError(
            f"loss.distill_weight {cfg.loss.distill_weight} must be in [0, 1] and loss.distill_temperature "
            f"{cfg.loss.distill_temperature} positive"
        )
    if not 0.0 <= cfg.train.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay: {cfg.train.ema_decay} must be in [0, 1)")
    if cfg.train.freeze_epochs < 0 or (cfg.train.trainable_stages or 0) < 0:
        raise ConfigError("train.freeze_epochs and train.trainable_stages must be >= 0")
    _check_weights(cfg.model)
    if cfg.train.feature_cache:
        _check_feature_cache(cfg)


def _check_feature_cache(cfg: Config) -> None:
    """Cached features are the frozen backbone's output for fixed pixels: only a flip survives as augmentation."""
    why = "train.feature_cache trains the heads on the frozen backbone's cached features"
    if cfg.train.trainable_stages != 0:
        raise ConfigError(f"{why}: set train.trainable_stages=0 (it is {cfg.train.trainable_stages})")
    default = AugmentConfig()
    changed = [
        f"augment.{f.name}={getattr(cfg.augment, f.name)}"
        for f in dataclasses.fields(AugmentConfig)
        if f.name != "hflip" and getattr(cfg.augment, f.name) != getattr(default, f.name)
    ]
    if changed:
        raise ConfigError(f"{why}, so only augment.hflip applies; unset {', '.join(changed)}")
    if cfg.loss.distill_from or cfg.data.pseudo_labels:
        raise ConfigError(f"{why}: loss.distill_from and data.pseudo_labels are not supported with it")


def _check_weights(m: ModelConfig) -> None:
    """A package source fills exactly one architecture; one source at a time."""
    if m.pretrained_file and m.pretrained is not False:
        raise ConfigError(
            f"model.pretrained={m.pretrained!r} and model.pretrained_file={m.pretrained_file!r}: give one source"
        )
    if isinstance(m.pretrained, str) and not m.pretrained.strip():
        raise ConfigError("model.pretrained: an empty string; use false, true, a file or package:NAME")
    if is_package_source(m.pretrained):
        pkg = package_source(str(m.pretrained))
        if m.backbone != pkg.backbone:
            raise ConfigError(
                f"model.pretrained={m.pretrained} holds weights for the backbone {pkg.backbone!r}, not "
                f"{m.backbone!r}: set model.backbone={pkg.backbone}"
            )


def _check_background(d: DataConfig) -> None:
    """Background-removal options: values in range, and rembg's local model file present."""
    if d.background_fill is not None and not all(0 <= v <= 255 for v in d.background_fill):
        raise ConfigError(f"data.background_fill: {list(d.background_fill)} must be RGB values in [0, 255] (or null)")
    if d.grabcut_iterations < 1 or not 0.0 <= d.grabcut_margin < 0.5 or d.grabcut_size < 16:
        raise ConfigError(
            f"data.grabcut_iterations ({d.grabcut_iterations}) must be >= 1, data.grabcut_margin "
            f"({d.grabcut_margin}) in [0, 0.5), data.grabcut_size ({d.grabcut_size}) >= 16"
        )
    if d.background_model is not None and d.background_method != "rembg":
        raise ConfigError(
            f"data.background_model is for data.background_method=rembg (the method is {d.background_method!r})"
        )
    if d.background == "keep" or d.background_method != "rembg":
        return
    where = (
        "put a U²-Net ONNX file (e.g. rembg's u2net.onnx, copied from a machine that has it) on this machine "
        "and give its path; fashattr never downloads a model"
    )
    if d.background_model is None:
        raise ConfigError(f"data.background_method=rembg needs data.background_model: {where}")
    path = Path(d.background_model).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"data.background_model: {path} not found: {where}")
