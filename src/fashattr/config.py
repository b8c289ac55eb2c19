"""Typed configuration: YAML + ``key=value`` overrides, validated against dataclasses.

An unknown key is an error that names the closest valid key; a value of the wrong type is
an error that names the key, the value and the type expected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from fashattr.errors import ConfigError
from fashattr.weight_sources import is_package_source, package_source, preprocessing_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataConfig:
    format: str = "ai6126"  # ai6126 | csv | deepfashion-fine | fashionhow | folder
    # Dataset folder (or the CSV/Parquet table's folder); relative to the config file.
    root: str = "../shared/data/FashionDataset"
    reader_options: dict[str, Any] = field(default_factory=dict)  # layout-specific; see data/formats
    train_split: str = "train"  # the labelled split training and both holdouts come from
    # Model selection happens on a stratified holdout carved from train_split, unless
    # eval_split names a labeled split to use instead.
    holdout: float = 0.1
    holdout_seed: int = 0  # seed of the selection holdout's stratified draw
    eval_split: str | None = None  # a labelled split to select on instead of the holdout
    # An evaluation holdout, carved (stratified) from train_split before the selection holdout
    # and never used for training, selection, early stopping or tuning: the one number that the
    # choice of epoch did not see. Its own fixed seed keeps it the same for every recipe and
    # selection seed. 0 = off; the selection holdout is then data.holdout of what remains.
    test_holdout: float = 0.0
    test_holdout_seed: int = 1234  # fixed: the same test holdout for every recipe
    image_size: int = 112  # side of the letterboxed square the model sees, in pixels
    bbox_crop: bool = False  # crop to the garment's box where the layout has boxes
    bbox_margin: float = 0.1  # box grown by this share of its size on every side
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # normalisation; follows the pretrained weights unless set
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)  # normalisation; follows the pretrained weights unless set
    cache_dir: str | None = None  # None: $FASHATTR_CACHE or ~/.cache/fashattr
    workers: int = 0  # image decode processes; 0 = all cores
    # An unreadable image (missing, truncated, corrupt, too large): "error" stops with its name;
    # "skip" leaves it out, counted and listed in the log and the run folder (skipped_images.txt).
    on_bad_image: Literal["error", "skip"] = "error"
    # Training order: "shuffle" (each row once per epoch) or "balanced" (drawn with replacement,
    # weight 1 / count ** balance_power of the rarest class a row carries, or of its class in
    # balance_group). Don't stack it on a balanced loss: it over-corrects.
    sampler: Literal["shuffle", "balanced"] = "shuffle"
    balance_group: str | None = None  # balanced sampler: weigh by this group's class (null: rarest class)
    balance_power: float = 1.0  # balanced sampler: 1 = inverse frequency, 0.5 = square root
    # Self-training (engine/pseudo.py): the splits whose images carry no labels, which `fashattr pseudo-label RUN`
    # labels with a teacher run when it is given no --splits; and the file it wrote, whose images (each group
    # above its confidence threshold; the rest unknown, masked in the loss) are added to the training rows.
    # Never the train split (the holdouts come from it) nor eval_split: both are refused.
    unlabeled_splits: list[str] = field(default_factory=list)
    pseudo_labels: str | None = None  # pseudo-label file from `fashattr pseudo-label` to train on
    # Exact duplicate images (same file bytes) within train_split whose labels disagree (data/dedup.py):
    # "keep" trains on them as listed; "drop_conflicting" leaves every copy out of the training rows (the
    # holdouts are never changed, so every recipe is measured on the same images).
    duplicates: Literal["keep", "drop_conflicting"] = "keep"
    # Background removal (portable/background.py), done once in the decode cache and by every runtime: "remove"
    # paints the background in background_fill (null: the letterbox fill). "grabcut" (OpenCV, no weights)
    # starts from the box when there is one, else a rectangle grabcut_margin in from each side, at
    # grabcut_size px on the long side; "rembg" runs a local U²-Net ONNX file (background_model; never a
    # download). Extra: pip install 'fashattr[background]'.
    background: Literal["keep", "remove"] = "keep"
    background_method: Literal["grabcut", "rembg"] = "grabcut"  # grabcut (OpenCV) or rembg (a local U²-Net ONNX file)
    background_model: str | None = None  # rembg: path of the U²-Net ONNX file
    background_fill: tuple[int, int, int] | None = None  # RGB of the painted background; null: the letterbox fill
    grabcut_iterations: int = 3  # GrabCut iterations
    grabcut_margin: float = 0.05  # GrabCut without a box: rectangle this share in from each side
    grabcut_size: int = 128  # GrabCut works at this many pixels on the long side


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "resnet18"  # any timm model name (resnet18, tf_efficientnet_lite0, convnext_atto, ...)
    # The backbone's initial weights (weight_sources.py): false (random), true (timm's hub), a weights file
    # (.safetensors, or .pth/.pt read with weights_only=True), or an installed package such as
    # "package:efficientnet-lite0". Unless the config sets them, data.mean, data.std and data.image_size
    # follow the weights.
    pretrained: bool | str = False
    pretrained_file: str | None = None  # the older spelling of pretrained=FILE
    drop_rate: float = 0.0  # dropout on the pooled features
    drop_path_rate: float = 0.0  # stochastic depth
    head_layers: int = 0  # shared fully-connected layers before the per-group heads
    head_width: int = 512  # width of the shared head layers
    head_activation: str = "relu"  # activation of the shared head layers
    head_dropout: float = 0.0  # dropout inside the shared head layers
    # Budget on the saved weights, in MB of 10^6 bytes (FASHION-HOW allows 25): a model over it
    # is rejected before training starts.
    max_mb: float | None = None


@dataclass(frozen=True)
class LossConfig:
    name: Literal["ce", "focal", "bce"] = "ce"  # bce: one sigmoid per class (one-vs-rest)
    label_smoothing: float = 0.0  # single-label groups
    focal_gamma: float = 2.0  # focal loss focusing parameter
    class_weights: Literal["none", "inverse", "effective"] = "none"  # per-class loss weights from the training counts
    effective_beta: float = 0.999  # class_weights=effective: (1 - beta) / (1 - beta^n)
    # Balanced softmax / logit adjustment: add tau * log(prior) to logits during training.
    logit_adjust_tau: float = 0.0
    # Per-group loss weights (list in schema order, or by name).
    group_weights: list[float] | dict[str, float] | None = None
    pos_weight: Literal["none", "auto"] = "none"  # multi-label groups: BCE pos_weight = neg/pos
    # Distillation (engine/distill.py): teacher run folders whose mean softened probabilities (softmax of logits / T,
    # computed once per training image before training) are soft targets; the loss becomes
    # (1 - distill_weight) * hard loss + distill_weight * T^2 * KL(teachers || student at T).
    distill_from: list[str] = field(default_factory=list)
    distill_weight: float = 0.5  # share of the teachers' term in the loss
    distill_temperature: float = 2.0  # softening temperature T of teacher and student


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["adamw", "sgd"] = "adamw"  # optimizer
    lr: float = 2e-3  # peak learning rate (the heads'; see layer_decay)
    weight_decay: float = 0.05  # decoupled (AdamW); not on norms and biases
    momentum: float = 0.9  # sgd
    nesterov: bool = True  # sgd
    betas: tuple[float, float] = (0.9, 0.999)  # adamw
    # Discriminative learning rates over timm's coarse parameter groups of the backbone (stem,
    # stages or blocks, input to output); the heads keep optim.lr. layer_decay d gives the
    # group k places before the heads lr * d**k (BEiT / timm); stage_lr gives one multiplier per
    # backbone group instead. Both 1 / null = one learning rate.
    layer_decay: float = 1.0
    stage_lr: list[float] | None = None  # one multiplier per backbone group (input to output)


@dataclass(frozen=True)
class SchedConfig:
    # Learning-rate schedule, stepped per optimizer step.
    name: Literal["cosine", "step", "cosine_restarts", "onecycle", "constant"] = "cosine"
    warmup_epochs: float = 1.0  # linear warm-up from 0
    min_lr_ratio: float = 0.01  # cosine: final lr as a share of the peak
    step_epochs: float = 10.0  # step: multiply lr by gamma every step_epochs
    gamma: float = 0.1  # step: lr multiplier
    restart_epochs: float = 5.0  # cosine_restarts: first cycle length
    restart_mult: int = 1  # cosine_restarts: cycle length multiplier
    onecycle_pct_start: float = 0.25  # onecycle: share of steps spent rising


@dataclass(frozen=True)
class AugmentConfig:
    """Batched training augmentations; names follow torchvision / albumentations / timm.

    Probabilities are per sample; ranges are sampled per sample (mixup/cutmix: per batch).
    """

    hflip: float = 0.5  # RandomHorizontalFlip p
    vflip: float = 0.0  # RandomVerticalFlip p
    degrees: float = 0.0  # RandomAffine: rotation in [-degrees, degrees]
    translate: float = 0.0  # RandomAffine: shift up to this fraction of the side
    scale: tuple[float, float] = (1.0, 1.0)  # RandomAffine: zoom range
    shear: float = 0.0  # RandomAffine: x-shear in [-shear, shear] degrees
    rrc: float = 0.0  # RandomResizedCrop p
    rrc_scale: tuple[float, float] = (0.35, 1.0)  # RandomResizedCrop: area fraction
    rrc_ratio: tuple[float, float] = (0.75, 1.3333333)  # RandomResizedCrop: aspect ratio
    brightness: float = 0.0  # ColorJitter: factor in [1 - b, 1 + b]
    contrast: float = 0.0  # ColorJitter: factor in [1 - c, 1 + c]
    saturation: float = 0.0  # ColorJitter: factor in [1 - s, 1 + s]
    hue: float = 0.0  # ColorJitter: hue rotation in [-hue, hue] turns (max 0.5)
    jitter_p: float = 1.0  # share of samples that get the colour jitter
    grayscale: float = 0.0  # RandomGrayscale p
    blur: float = 0.0  # GaussianBlur p
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # GaussianBlur: sigma range
    erasing: float = 0.0  # RandomErasing / CoarseDropout p
    erasing_scale: tuple[float, float] = (0.02, 0.33)  # RandomErasing: area fraction
    erasing_ratio: tuple[float, float] = (0.3, 3.3)  # RandomErasing: aspect ratio
    mixup: float = 0.0  # Beta(alpha, alpha); 0 = off
    cutmix: float = 0.0  # Beta(alpha, alpha); 0 = off
    mix_prob: float = 1.0  # share of batches mixed
    mix_switch_prob: float = 0.5  # with both on: chance of cutmix instead of mixup


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10  # passes over the training rows
    batch_size: int = 64  # images per optimizer step
    eval_batch_size: int = 128  # images per forward pass in evaluation
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"  # autocast: auto = bf16 on CUDA, off on CPU
    # NHWC memory format: faster here on CPU (oneDNN: resnet18 +40%) and on CUDA under AMP; the
    # image cache is NHWC already, so batches need no transpose.
    channels_last: bool = True
    compile: bool = False  # torch.compile the model
    early_stop_patience: int = 0  # epochs without improvement; 0 = off
    select_metric: str = "avg_class_acc"  # metric that picks best.safetensors (avg_class_acc, overall_acc, ...)
    select_mode: Literal["max", "min"] = "max"  # max or min of select_metric
    seed: int = 0  # weights, order and augmentation; not the holdouts
    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:1, ...
    threads: int = 0  # torch CPU threads; 0 = torch default
    checkpoint_every: int = 0  # optimizer steps between mid-epoch checkpoints; 0 = epoch ends only
    # Batches prepared ahead in a background thread; 0 = inline. None = auto: 2 on CUDA or when
    # there are spare cores, else 0 (on 2 cores a thread slows a 2-thread model: measured 0.77 vs 0.84).
    prefetch: int | None = None
    progress: bool = True  # tqdm bars on stderr
    # Fine-tuning (fastai's fine_tune): the backbone is frozen for the first freeze_epochs epochs
    # (heads train), then unfrozen. trainable_stages K keeps all but the last K of timm's coarse
    # backbone groups frozen throughout (0 = a frozen feature extractor; null = all train). Frozen
    # normalization layers also keep their running statistics.
    freeze_epochs: int = 0
    trainable_stages: int | None = None  # last K backbone groups train; null = all
    # Exponential moving average of the weights (timm's ModelEmaV3); when on, evaluation, model
    # selection and best/last.safetensors use the averaged weights. 0 = off.
    ema_decay: float = 0.0
    ema_warmup: bool = True  # decay ramps up from 0 over the first steps (timm's warm-up)
    # Train the heads on the frozen backbone's pooled features, computed once per image (and per flipped
    # image when augment.hflip > 0) and cached by content (engine/features.py): seconds per epoch instead
    # of minutes. Needs train.trainable_stages=0 and no augmentation but hflip.
    feature_cache: bool = False


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out_dir: str = "runs"  # where run folders go; relative to the config file
    name: str | None = None  # run folder name; None: derived from time and backbone
    recipe: str | None = None  # free text: which recipe this config follows


class _KeyProblem(ConfigError):
    """A ConfigError about one key; ``parts`` is its path, so the YAML line holding it can be named."""

    def __init__(self, message: str, parts: tuple[str, ...], unknown: bool = False) -> None:
        super().__init__(message)
        self.parts = parts
        self.unknown = unknown


def _suggest(key: str, valid: list[str], where: str, origin: str) -> _KeyProblem:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if close:
        hint = f"did you mean {where + close[0]!r}?"
    else:
        section = f"keys in {where[:-1]}" if where else "top-level keys"
        hint = f"valid {section}: {', '.join(valid)}."
    parts = (*where.split(".")[:-1], key)
    return _KeyProblem(f"unknown config key {where + key!r}{origin}; {hint}", parts, unknown=True)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp`` (int widens to float, lists become tuples)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} is not a valid {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if origin is Literal:
        options = typing.get_args(tp)
        if isinstance(value, bool):  # YAML 1.1 reads `amp: off` as false and `on` as true: the user meant the word
            word = "on" if value else "off"
            if word in options:
                return word
        elif value in options:
            return value
        raise ConfigError(f"{key}: {value!r} is not one of {list(typing.get_args(tp))}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp)
        return [_coerce(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _build(cls: type, data: dict[str, Any], where: str, origin: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; ``where`` is the key prefix ("optim."), ``origin`` says
    where an unknown key came from (" in command-line override 'x=1'")."""
    if not isinstance(data, dict):
        raise _KeyProblem(f"{where[:-1] or 'config'}: expected a mapping, got {data!r}", tuple(where.split(".")[:-1]))
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise _suggest(str(key), list(fields), where, origin)
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value or {}, f"{where}{key}.", origin)  # type: ignore[arg-type]
            continue
        try:
            kwargs[key] = _coerce(value, tp, f"{where}{key}")
        except ConfigError as e:
            raise _KeyProblem(str(e), (*where.split(".")[:-1], key)) from None
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Validate a nested mapping into a Config; the preprocessing it leaves unset follows the weights."""
    cfg: Config = _build(Config, data or {}, "")
    _check(cfg)
    return _follow_weights(cfg, (data or {}).get("data") or {})


def _follow_weights(cfg: Config, data_keys: dict[str, Any]) -> Config:
    """Fill ``data.mean``, ``data.std`` and ``data.image_size`` from the pretrained weights' own config
    where the config does not set them; warn where it sets a normalisation the weights were not trained with."""
    wanted = preprocessing_of(cfg.model.pretrained_file or cfg.model.pretrained, cfg.model.backbone)
    if wanted is None:
        return cfg
    fill = {k: v for k, v in wanted.items() if k not in data_keys}
    for key in ("mean", "std"):
        given = getattr(cfg.data, key)
        if key in data_keys and any(abs(a - b) > 1e-6 for a, b in zip(given, wanted[key], strict=True)):
            log.warning(
                "data.%s=%s differs from the %s the weights %s were trained with (%s): features shift; "
                "leave data.%s unset to follow the weights",
                key, list(given), key, cfg.model.pretrained, list(wanted[key]), key,
            )  # fmt: skip
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **fill)) if fill else cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides; values are parsed as YAML (``lr=1e-3``, ``x=[1,2]``)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in (data or {}).items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value (e.g. train.epochs=5)")
        value = yaml.safe_load(raw) if raw != "" else None
        # YAML 1.1 reads 1e-3 as a string; accept it as the float a user meant.
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value) if any(c in value for c in "eE.") else value
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply overrides.

    Args:
        path: a YAML file, or None for the defaults.
        overrides: ``section.key=value`` items, applied in order after the file.

    Returns:
        The validated config.

    Raises:
        ConfigError: naming where the bad key or value came from: the file and its line, or
            the command-line override that gave it.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        text = path.read_text()
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        try:
            _build(Config, data, "")  # the file's own keys and values, before any override
        except ConfigError as e:
            line = _yaml_line(text, e.parts) if isinstance(e, _KeyProblem) else None
            raise ConfigError(f"{path}{'' if line is None else f':{line}'}: {e}") from None
        # The one path rule: a relative path in a config file is relative to that file's folder (as a label
        # table's image paths are to the table's). Shipped recipes are templates run from anywhere: theirs are
        # relative to the working directory, like a path typed in an override.
        data = resolve_paths(data, Path.cwd() if is_recipe(path) else path.resolve().parent, path)
    for item in overrides or []:
        data = apply_overrides(data, [item])
        try:
            # The file and the earlier overrides are valid, so whatever fails here is this item's.
            _build(Config, data, "", origin=f" in command-line override {item!r}")
        except ConfigError as e:
            if isinstance(e, _KeyProblem) and e.unknown:
                raise
            raise ConfigError(f"command-line override {item!r}: {e}") from None
    data = resolve_paths(data, Path.cwd())  # the overrides' relative paths: the working directory
    try:
        return absolute_paths(config_from_dict(data), Path.cwd())  # and the defaults'
    except ConfigError as e:  # a cross-field check: the file and the overrides together
        sources = [str(path)] if path is not None else []
        sources += ["the command-line overrides"] if overrides else []
        raise ConfigError(f"{' with '.join(sources) or 'config'}: {e}") from None


def _yaml_line(text: str, parts: tuple[str, ...]) -> int | None:
    """The 1-based line of the deepest key of ``parts`` found in the YAML ``text``."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    line = None
    for part in parts:
        if not isinstance(node, yaml.MappingNode):
            break
        match = next(((k, v) for k, v in node.value if k.value == part), None)
        if match is None:
            break
        line, node = match[0].start_mark.line + 1, match[1]
    return line


# The keys whose values are file or folder paths (section, key); model.pretrained only when it names a file.
PATH_KEYS = (
    ("data", "root"),
    ("data", "cache_dir"),
    ("data", "pseudo_labels"),
    ("data", "background_model"),
    ("model", "pretrained"),
    ("model", "pretrained_file"),
    ("loss", "distill_from"),
)


def is_recipe(path: Path) -> bool:
    """Whether ``path`` is one of the recipes shipped in the package (configs/recipes links to them)."""
    import importlib.resources

    recipes = Path(str(importlib.resources.files("fashattr") / "recipes")).resolve()
    return path.resolve().parent == recipes


_WARNED: set[tuple[str, str]] = set()  # (config file, path) pairs already warned about in this process


def _absolute(value: str, base: Path, origin: Path | None) -> str:
    """``value`` made absolute against ``base``. A config written before the one path rule (its paths relative to
    the working directory) still loads: a path missing beside the file but present in the working directory is
    taken from there, with a warning."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    resolved = (base / p).resolve()
    if origin is not None and not resolved.exists() and p.exists():
        if (str(origin), value) in _WARNED:  # a command reads a run's config more than once: said once
            return str(p.resolve())
        _WARNED.add((str(origin), value))
        log.warning(
            "%s: %s is not found beside the config but is in the working directory: read from there; paths in a "
            "config are relative to its folder, so write %s",
            origin,
            value,
            os.path.relpath(p.resolve(), base),
        )
        return str(p.resolve())
    return str(resolved)


def resolve_paths(data: dict[str, Any], base: Path, origin: Path | None = None) -> dict[str, Any]:
    """A copy of the config mapping ``data`` whose path values (:data:`PATH_KEYS`, and the csv reader's
    ``image_root``) are absolute, relative ones taken against ``base``. ``origin``: the config file they came
    from (for the warning about paths written before the rule)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in (data or {}).items()}
    for section, key in PATH_KEYS:
        block = out.get(section)
        if not isinstance(block, dict) or block.get(key) in (None, "", True, False):
            continue
        value = block[key]
        if section == "model" and key == "pretrained" and (not isinstance(value, str) or is_package_source(value)):
            continue
        if isinstance(value, list):
            block[key] = [_absolute(str(v), base, origin) for v in value]
        elif isinstance(value, str):
            block[key] = _absolute(value, base, origin)
    options = (out.get("data") or {}).get("reader_options")
    if isinstance(options, dict) and isinstance(options.get("image_root"), str):
        out["data"]["reader_options"] = {**options, "image_root": _absolute(options["image_root"], base, origin)}
    return out


def absolute_paths(cfg: Config, base: Path) -> Config:
    """``cfg`` with every relative path (:data:`PATH_KEYS`) made absolute against ``base``: a loaded config holds
    absolute paths, so the run folder's copy of it reads the same from any folder."""

    def fix(v: Any) -> Any:
        return v if v is None or Path(v).is_absolute() else str((base / v).resolve())

    d, m, loss = cfg.data, cfg.model, cfg.loss
    pretrained = m.pretrained
    if isinstance(pretrained, str) and not is_package_source(pretrained):
        pretrained = fix(pretrained)
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(
            d,
            root=fix(d.root),
            cache_dir=fix(d.cache_dir),
            pseudo_labels=fix(d.pseudo_labels),
            background_model=fix(d.background_model),
        ),
        model=dataclasses.replace(m, pretrained=pretrained, pretrained_file=fix(m.pretrained_file)),
        loss=dataclasses.replace(loss, distill_from=[fix(v) for v in loss.distill_from]),
    )


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def _check(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    if cfg.data.image_size < 8:
        raise ConfigError(f"data.image_size: {cfg.data.image_size} is too small (minimum 8)")
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
