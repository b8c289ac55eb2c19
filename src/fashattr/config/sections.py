"""The configuration's sections as frozen dataclasses: every key, its type, its default, and (in the comment beside
it) what it does. The documentation's configuration reference is generated from this file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


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
    # The side a trained model is evaluated and used at (calibrate, eval, predict, pseudo-label, report, the
    # bundle, ONNX, serve, catalog); null: image_size. Training and its choice of epoch stay at image_size. A
    # random-resized-crop recipe shows garments larger than a whole letterboxed photo does, so a model scores
    # higher when tested a little larger than it trained (FixRes, Touvron et al. 2019; benchmarks/eval_size.py).
    eval_size: int | None = None
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
    # above its confidence threshold; the rest unknown, masked in the loss) are added to the training rows. An
    # image with no group above its threshold is left out, unless loss.distill_from is set: the teachers' soft
    # targets then teach on every image of the file (Noisy Student). Never the train split (the holdouts come from
    # it) nor eval_split: both are refused.
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
    # The whole model (backbone, shared layers, heads) from an earlier run of the same schema and architecture:
    # its folder (best.safetensors) or a .safetensors file. Fine-tune from a linear probe's converged heads
    # (LP-FT), or start the next labelling round where the last model stopped. Applied after `pretrained`,
    # which still sets the preprocessing (mean, std, size).
    init_from: str | None = None
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
    # timm's warm-up: the decay ramps as 1 - (1 + step)^(-2/3), reaching 0.998 only after ~11,000 steps; short
    # fine-tunes want false (cpu_pretrained), and training warns when a run never reaches ema_decay.
    ema_warmup: bool = True
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
    # Experiment tracking (engine/tracking.py): "mlflow" logs the resolved config, every epoch's metrics, the summary,
    # the run's files and its bundle to MLflow under the run's name (pip install 'fashattr[mlflow]').
    tracking: Literal["none", "mlflow"] = "none"
    tracking_uri: str | None = None  # an MLflow server (http://host:5000) or database URI; null: OUT_DIR/mlflow.db
    tracking_experiment: str = "fashattr"  # the MLflow experiment the runs go to
    name: str | None = None  # run folder name; None: derived from time and backbone
    recipe: str | None = None  # free text: which recipe this config follows
