"""The training loop: ``fit`` -> ``train_one_epoch`` -> ``evaluate``, readable top to bottom.

A run folder holds config.yaml, schema.yaml, metrics.csv, train.log, summary.json,
best.safetensors / last.safetensors (weights) and checkpoint.pt (everything an exact
resume needs). A run killed at any moment resumes with ``fit(resume=run_dir)`` and ends
with the same weights and metrics, bit for bit on CPU, as one never interrupted.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.utils import ModelEmaV3
from tqdm import tqdm

from fashattr.config import Config, ConfigError, TrainConfig, load_config, save_config
from fashattr.data.augment import BatchAugment
from fashattr.data.loader import BatchLoader, sample_weights
from fashattr.data.pipeline import Prefetcher, augmented_batches
from fashattr.data.prepare import TEST_HOLDOUT, inference_data, load_split, load_train_eval
from fashattr.device import amp_dtype, autocast, prefetch_depth, resolve_device
from fashattr.engine import distributed
from fashattr.engine.checkpoint import load_checkpoint, recovery_hint, save_checkpoint, save_weights
from fashattr.engine.distill import teacher_targets
from fashattr.engine.features import VIEWS, cached_features, feature_batches
from fashattr.engine.finetune import apply_freeze, frozen_stages, init_from_run, stage_of, trainable_count
from fashattr.engine.optim import create_optimizer, create_scheduler
from fashattr.engine.pseudo import add_pseudo_labels
from fashattr.engine.tracking import Tracker
from fashattr.errors import USER_ERRORS, CheckpointError, TrainingDivergedError
from fashattr.fileio import atomic_write, atomic_write_text
from fashattr.inference import predict_scores
from fashattr.losses import MultiGroupLoss, create_loss
from fashattr.memory import keep_freed_memory
from fashattr.metrics import Metrics, compute_metrics, metric_names
from fashattr.models import AttributeModel, create_model
from fashattr.models.model import HeadsOnly, fixed_input_size
from fashattr.models.weights import load_weights

log = logging.getLogger("fashattr")
CHECKPOINT = "checkpoint.pt"
TIMING_COLUMNS = ("epoch_s", "train_img_s")  # the only metrics.csv columns that vary between runs
SYNC_EVERY = 20  # steps between reading the loss back from the device (a sync that stalls CUDA)


def create_ema(model: torch.nn.Module, t: TrainConfig, steps: int) -> ModelEmaV3 | None:
    """timm's weight average for ``train.ema_decay`` (None when 0), warning when its warm-up keeps the decay
    below the configured one for the whole run: timm ramps it as 1 - (1 + step)^(-2/3), which reaches 0.998
    only after about 11,000 steps, so a short fine-tune would average over far fewer steps than it asks for."""
    if t.ema_decay <= 0:
        return None
    ema = ModelEmaV3(model, decay=t.ema_decay, use_warmup=t.ema_warmup)
    reached = ema.get_decay(steps)
    if reached < t.ema_decay:
        log.warning(
            "train.ema_decay %g is never reached: the warm-up (train.ema_warmup) ramps it to %.4f by the last of "
            "%d steps, an average over about the last %d steps instead of %d; train.ema_warmup=false uses %g "
            "from the first step",
            t.ema_decay, reached, steps, round(1 / (1 - reached)), round(1 / (1 - t.ema_decay)), t.ema_decay,
        )  # fmt: skip
    return ema


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint."""

    epoch: int = 0  # the epoch in progress (0-based)
    step: int = 0  # next step within that epoch
    loss_sum: float = 0.0  # training loss summed over the steps of this epoch so far
    history: list[dict[str, float]] = field(default_factory=list)
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    elapsed: float = 0.0  # seconds of training across all sessions of this run


class Trainer:
    """Holds what one run needs; ``run()`` trains to the end (or early stop) and returns the run folder."""

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        resume: bool,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
        tracking_parent: Tracker | None = None,
    ) -> None:
        self.cfg, self.run_dir, self.on_epoch = cfg, run_dir, on_epoch
        t = cfg.train
        keep_freed_memory()  # glibc: no page faults re-allocating every step's activations
        if t.threads > 0:
            torch.set_num_threads(t.threads)
        torch.manual_seed(t.seed)  # the same on every process: identical initial weights
        self.dist = distributed.from_env()
        self.device = resolve_device(t.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.amp = amp_dtype(self.device, t.amp)
        self.channels_last = t.channels_last
        # MLflow (tracking: mlflow), started before the data are read: an unreachable server stops the run now.
        self.tracker = Tracker.start(cfg, run_dir, tracking_parent) if self.dist.main else None

        if cfg.data.eval_size not in (None, cfg.data.image_size) and fixed_input_size(cfg.model.backbone):
            raise ConfigError(
                f"data.eval_size {cfg.data.eval_size}: {cfg.model.backbone} is built for one input size "
                f"(data.image_size {cfg.data.image_size}); leave data.eval_size null"
            )
        with distributed.rank0_first(self.dist):
            self.schema, self.train, self.eval, self.test = load_train_eval(
                cfg.data, progress=t.progress and self.dist.main
            )
        # The images of each part as the data were split (before any pseudo-labelled rows): summary.json keeps
        # them, and the bundle's model card reads them from there.
        self.data_counts = {"train_images": len(self.train), "selection_images": len(self.eval)}
        if self.test is not None:
            self.data_counts["test_holdout_images"] = len(self.test)
        if cfg.data.pseudo_labels:  # self-training: the teacher's confident labels as extra training rows
            progress = t.progress and self.dist.main
            self.train = add_pseudo_labels(
                self.train,
                cfg.data,
                self.schema,
                progress,
                [self.eval, self.test],
                soft_targets=bool(cfg.loss.distill_from),
            )
        self.eval_pixels = self.eval.pixels()  # gathered once, evaluated every epoch
        if inference_data(cfg.data) is not cfg.data:
            log.info(
                "pixels: trained and selected at %d px; the test holdout, calibrate, eval, predict and the bundle "
                "at %d px (data.eval_size)",
                cfg.data.image_size,
                cfg.data.eval_size,
            )
        selectable = [*metric_names(self.schema), "eval_loss"]
        if t.select_metric not in selectable:
            raise ConfigError(f"train.select_metric {t.select_metric!r} unknown; choose from {selectable}")
        assert self.train.labels is not None and self.eval.labels is not None
        d = cfg.data
        if d.balance_group is not None and d.balance_group not in self.schema.names:
            raise ConfigError(f"data.balance_group {d.balance_group!r} unknown; groups are {self.schema.names}")
        weights = None
        if d.sampler == "balanced":
            weights = sample_weights(self.schema, self.train.labels, d.balance_group, d.balance_power)
        if t.batch_size % self.dist.world:
            raise ConfigError(
                f"train.batch_size {t.batch_size} (global) must divide by the {self.dist.world} processes"
            )
        targets = dict(self.train.labels)
        if cfg.loss.distill_from:  # the teachers' soft targets ride with the labels (fashattr.engine.distill)
            with distributed.rank0_first(self.dist):
                pixels = self.train.pixels()
                targets.update(teacher_targets(cfg, self.schema, pixels, run_dir, t.eval_batch_size, str(self.device)))
        self.loader = BatchLoader(
            self.train.images,
            targets,
            t.batch_size // self.dist.world,  # each process's share of the global batch
            shuffle=True,
            seed=t.seed,
            drop_last=True,
            rows=self.train.rows,
            weights=weights,
            rank=self.dist.rank,
            world=self.dist.world,
        )
        self.model: AttributeModel = create_model(cfg.model, self.schema, cfg.data.image_size).to(self.device)
        # An earlier run's weights over the whole model (file and sha256 for the summary). A resumed run restores
        # its own weights and this record from its checkpoint: the earlier run need not exist any more.
        self.init_from: dict[str, str] | None = None
        if cfg.model.init_from and not resume:
            self.init_from = init_from_run(self.model, cfg.model.init_from, self.schema)
            log.info(
                "model.init_from: every weight from %s (sha256 %s)",
                self.init_from["file"],
                self.init_from["sha256"][:12],
            )
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # The weights above are drawn alike everywhere; from here on each process draws its own
        # dropout masks (else every shard of a batch would get the same ones). Rank 0 keeps its stream.
        if self.dist.rank:
            torch.manual_seed(distributed.rank_seed(t.seed, self.dist.rank))
        self.features: torch.Tensor | None = None  # train.feature_cache: (views, rows, F) of the train split
        self.eval_features: torch.Tensor | None = None
        if t.feature_cache:
            self._cache_features()
        self.forward: torch.nn.Module = self._wrap()
        self.loss_fn: MultiGroupLoss = create_loss(cfg.loss, self.schema, self.train.labels).to(self.device)
        self.optimizer = create_optimizer(cfg.optim, self.model)
        self.n_stages = stage_of(self.model)[1]
        self.frozen = -1  # backbone stages frozen in the current epoch; -1 = not yet applied
        # The average follows the raw model; evaluation and saved weights use it when it is on.
        self.ema = create_ema(self.model, t, len(self.loader) * t.epochs)
        self.eval_model: AttributeModel = self.ema.module if self.ema is not None else self.model
        self.scheduler = create_scheduler(cfg.sched, self.optimizer, len(self.loader), t.epochs)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        sizes = {g.name: g.num_classes for g in self.schema.groups}
        self.augment = BatchAugment(cfg.augment, cfg.data.mean, cfg.data.std, sizes)
        # Each process its own augmentation stream: shards of a batch get independent flips, crops, ...
        self.aug_gen = torch.Generator(self.device).manual_seed(distributed.rank_seed(t.seed + 1, self.dist.rank))
        self.aug_state = self.aug_gen.get_state()  # after the last batch the model consumed
        self.progress = Progress()
        if resume:
            try:
                state = load_checkpoint(run_dir / CHECKPOINT)
            except CheckpointError as e:  # say what the run folder still offers
                raise CheckpointError(e.file, f"{e.message}; {recovery_hint(run_dir)}") from None
            self._restore(state)
        self.tb = _tensorboard(run_dir) if self.dist.main else None

    # ---- checkpoint state -------------------------------------------------------------
    def _rng_state(self) -> dict[str, torch.Tensor]:
        """This process's random streams as a checkpoint taken now must restore them."""
        rng = {"torch": torch.get_rng_state(), "aug": self.aug_state}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return rng

    def _state(self, rng: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        """The checkpoint; ``rng`` holds every process's random streams, in rank order."""
        p = self.progress
        return {
            "model": self.model.state_dict(),
            **({"ema": self.ema.module.state_dict()} if self.ema is not None else {}),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "progress": {k: getattr(p, k) for k in Progress.__dataclass_fields__},
            "init_from": self.init_from,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        ranks = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]  # older: one process's dict
        if len(ranks) != self.dist.world:
            raise ValueError(
                f"{self.run_dir / CHECKPOINT} holds the random states of {len(ranks)} process(es) but this run "
                f"has {self.dist.world}; resume it with {len(ranks)} (torchrun --nproc-per-node) for an exact resume"
            )
        rng = ranks[self.dist.rank]  # this process's own streams
        torch.set_rng_state(rng["torch"])
        self.aug_gen.set_state(rng["aug"])
        self.aug_state = rng["aug"]
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.progress = Progress(**state["progress"])
        self.init_from = state.get("init_from")  # absent from checkpoints written before model.init_from
        log.info("resumed at epoch %d step %d", self.progress.epoch + 1, self.progress.step)

    def save(self) -> None:
        """Write the checkpoint (rank 0); a collective under torchrun: every process calls it."""
        rng = distributed.all_gather(self._rng_state(), self.dist)
        if self.dist.main:
            save_checkpoint(self._state(rng), self.run_dir / CHECKPOINT)

    # ---- the loop -----------------------------------------------------------------------
    def run(self) -> Path:
        t, p = self.cfg.train, self.progress
        started = time.perf_counter() - p.elapsed
        while p.epoch < t.epochs and not self._should_stop():
            epoch_start = time.perf_counter()
            seen = self.train_one_epoch(started)
            evaluation = self.evaluate()
            elapsed = time.perf_counter() - epoch_start
            record = {
                "epoch": p.epoch + 1,
                "lr": self.optimizer.param_groups[-1]["lr"],  # the heads' (optim.lr's) learning rate
                "train_loss": p.loss_sum / len(self.loader),  # already the processes' mean
                **evaluation,
                "epoch_s": elapsed,
                "train_img_s": seen * self.dist.world / max(elapsed, 1e-9),
            }
            self._end_epoch(record)
            p.elapsed = time.perf_counter() - started
            self.save()
            self._write_metrics()
            if self.on_epoch is not None:  # e.g. a tuner's pruning; may raise to stop the run
                self.on_epoch(p.epoch, record)
        self._finish(time.perf_counter() - started)
        return self.run_dir

    def _should_stop(self) -> bool:
        patience = self.cfg.train.early_stop_patience
        return patience > 0 and self.progress.bad_epochs >= patience

    def train_one_epoch(self, started: float) -> int:
        """Train from the saved step to the end of the current epoch; returns images seen."""
        t, p = self.cfg.train, self.progress
        self.model.train()
        bar = tqdm(
            total=len(self.loader),
            initial=p.step,
            disable=not t.progress,
            mininterval=1.0,
            unit="step",
            desc=f"epoch {p.epoch + 1}/{t.epochs}",
        )
        self._apply_freeze()
        seen, tick = 0, time.perf_counter()
        pending = torch.zeros((), device=self.device)  # loss summed on the device since the last sync
        pending_steps, loss = 0, float("nan")
        if self.features is not None:
            hflip = self.cfg.augment.hflip
            batches = feature_batches(self.loader, self.features, hflip, self.aug_gen, self.device, p.epoch, p.step)
        else:
            batches = augmented_batches(
                self.loader, self.augment, self.aug_gen, self.device, p.epoch, p.step, self.channels_last
            )
        for x, y, aug_state in Prefetcher(batches, depth=prefetch_depth(self.device, t.prefetch)):
            self.aug_state = aug_state  # what a checkpoint after this batch must restore
            with autocast(self.device, self.amp):
                outputs = self.forward(x)
            losses = self.loss_fn(outputs, y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(losses["loss"]).backward()
            if t.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            pending += losses["loss"].detach()
            pending_steps += 1
            p.step += 1
            if self.ema is not None:
                self.ema.update(self.model, step=p.epoch * len(self.loader) + p.step)
            seen += len(x)
            checkpoint = t.checkpoint_every and p.step % t.checkpoint_every == 0 and p.step < len(self.loader)
            # Sync points depend on the step alone, so a resumed run sums exactly as an uninterrupted one.
            if checkpoint or p.step % SYNC_EVERY == 0 or p.step == len(self.loader):
                loss = self._flush(pending, pending_steps)
                pending, pending_steps = torch.zeros((), device=self.device), 0
            bar.set_postfix(
                loss="-" if math.isnan(loss) else f"{loss:.3f}",
                img_s=f"{seen / max(time.perf_counter() - tick, 1e-9):.0f}",
                refresh=False,
            )
            bar.update(1)
            if checkpoint:
                p.elapsed = time.perf_counter() - started
                self.save()
        bar.close()
        return seen

    def _cache_features(self) -> None:
        """The frozen backbone's pooled features of every image, both views, computed once (cached by content)."""
        if self.dist.enabled:
            raise ConfigError("train.feature_cache runs in one process; train without torchrun")
        d, views = self.cfg.data, VIEWS if self.cfg.augment.hflip > 0 else VIEWS[:1]
        bs = self.cfg.train.eval_batch_size

        def of(images: np.ndarray) -> torch.Tensor:
            return cached_features(self.model.backbone, images, d.mean, d.std, views, self.device, d.cache_dir, bs)

        self.features = of(self.train.images)
        self.eval_features = self.features if self.eval.images is self.train.images else of(self.eval.images)

    def _wrap(self) -> torch.nn.Module:
        """The module the training step calls: the model, in DDP under torchrun (which then
        averages the gradients of the parameters that train now), compiled when asked; its
        heads alone when they train on cached features."""
        forward: torch.nn.Module = self.model if self.features is None else HeadsOnly(self.model)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            forward = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if self.cfg.train.compile:
            forward = torch.compile(forward)  # type: ignore[assignment]
        return forward

    def _apply_freeze(self) -> None:
        """Freeze what this epoch keeps frozen (a function of the epoch alone, so resumable)."""
        frozen = frozen_stages(self.cfg, self.n_stages, self.progress.epoch)
        apply_freeze(self.model, frozen)
        if frozen != self.frozen and self.dist.enabled:
            # DDP syncs only the parameters that required gradients when it was built
            self.forward = self._wrap()
        if frozen != self.frozen:
            log.info(
                "epoch %d: %d of %d backbone stages frozen; %d trainable parameters",
                self.progress.epoch + 1,
                frozen,
                self.n_stages,
                trainable_count(self.model),
            )
            self.frozen = frozen

    def _flush(self, pending: torch.Tensor, steps: int) -> float:
        """Add the device-side loss sum to the epoch's; fail loudly on a non-finite loss."""
        # Averaged over the processes here (sync points fall on the same steps everywhere): every
        # process then holds the same epoch sum, the one rank 0's checkpoint saves for all, and
        # all of them stop together on a non-finite loss.
        total = distributed.mean(float(pending), self.dist)
        p = self.progress
        if not math.isfinite(total):
            # Raised before the checkpoint that would follow this sync point: the last one written stays.
            every = self.cfg.train.checkpoint_every
            saved = (p.step - steps) // every * every if every else 0
            if saved:
                kept = f"epoch {p.epoch + 1} step {saved}"
            else:
                kept = f"the end of epoch {p.epoch}" if p.epoch else "the start of training"
            raise TrainingDivergedError(
                f"training loss became {total} within the {steps} steps before epoch {p.epoch + 1} step {p.step} "
                f"(lr {self.optimizer.param_groups[-1]['lr']:.3g}); {self.run_dir / CHECKPOINT} still holds the "
                f"state at {kept}. Lower optim.lr, set train.grad_clip (e.g. 1.0), check the data's labels and "
                "images, or use train.amp=bf16 rather than fp16; then train again"
            )
        p.loss_sum += total
        return total / steps

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Metrics and loss on the model-selection split."""
        assert self.eval.labels is not None
        d, n = self.cfg.data, len(self.eval_pixels)
        if self.eval_features is not None:  # the heads on the cached features of the image as given
            self.eval_model.eval()
            pooled = self.eval_features[0, torch.as_tensor(self.eval.rows)].to(self.device)
            scores = {g: v.float().cpu().numpy() for g, v in self.eval_model.classify(pooled).items()}
            return self._eval_record(scores)
        # fp32, not the training autocast: `fashattr eval`, predict, the bundle and ONNX all run
        # fp32, so the numbers that pick the epoch are the ones the saved weights reproduce there.
        # It costs little: a forward pass over the holdout (a tenth of an epoch's images).
        scores = predict_scores(
            self.eval_model,
            self.eval_pixels[self.dist.rank :: self.dist.world],  # this process's shard
            d.mean,
            d.std,
            self.cfg.train.eval_batch_size,
            self.device,
            None,
            self.channels_last,
        )
        scores = distributed.gather_rows(scores, n, self.dist)  # every process: all rows, in order
        return self._eval_record(scores)

    def _eval_record(self, scores: dict[str, np.ndarray]) -> dict[str, float]:
        """Metrics and loss of the selection split's scores."""
        assert self.eval.labels is not None
        metrics = compute_metrics(self.schema, self.eval.labels, scores)
        targets = {g: torch.as_tensor(v) for g, v in self.eval.labels.items()}
        eval_loss = self.loss_fn(
            {g: torch.as_tensor(s).to(self.device) for g, s in scores.items()},
            {g: v.to(self.device) for g, v in targets.items()},
        )["loss"]
        return {"eval_loss": float(eval_loss), **metrics.summary()}

    def _end_epoch(self, record: dict[str, float]) -> None:
        t, p = self.cfg.train, self.progress
        value = record[t.select_metric]
        better = p.best is None or (value > p.best if t.select_mode == "max" else value < p.best)
        p.history.append(record)
        if better:
            p.best, p.best_epoch, p.bad_epochs = value, p.epoch + 1, 0
            if self.dist.main:
                save_weights(self.eval_model, self.run_dir / "best.safetensors")
        else:
            p.bad_epochs += 1
        if self.dist.main:
            save_weights(self.eval_model, self.run_dir / "last.safetensors")
        log.info(
            # Says what the numbers are: the selection holdout, the raw model (calibrate's decodings come later).
            "epoch %d/%d  train_loss %.4f  eval_loss %.4f  avg_class_acc %.4f  overall_acc %.4f"
            "  (selection holdout, undecoded)  selected on %s %.4f%s  (%.0f img/s)",
            p.epoch + 1,
            t.epochs,
            record["train_loss"],
            record["eval_loss"],
            record["avg_class_acc"],
            record["overall_acc"],
            t.select_metric,
            value,
            "  *best*" if better else "",
            record["train_img_s"],
        )
        if self.tb is not None:
            for k, v in record.items():
                self.tb.add_scalar(k, v, p.epoch + 1)
        if self.tracker is not None:
            self.tracker.log_metrics(record, p.epoch + 1)
        p.epoch, p.step, p.loss_sum = p.epoch + 1, 0, 0.0

    def _write_metrics(self) -> None:
        if not self.dist.main:
            return
        history = self.progress.history
        columns = list(dict.fromkeys(k for row in history for k in ["epoch", *row]))

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=columns)
                w.writeheader()
                w.writerows(history)

        atomic_write(self.run_dir / "metrics.csv", write)

    def _finish(self, wall_s: float) -> None:
        if not self.dist.main:
            return
        p = self.progress
        best = next((r for r in p.history if r["epoch"] == p.best_epoch), {})
        summary = {
            "best_epoch": p.best_epoch,
            "select_metric": self.cfg.train.select_metric,
            "best": best,
            "epochs_run": len(p.history),
            "stopped_early": p.epoch < self.cfg.train.epochs,
            "wall_s": round(wall_s, 1),
            "device": str(self.device),
            "processes": self.dist.world,
            "parameters": sum(x.numel() for x in self.model.parameters()),
            "backbone_weights": self.model.init_weights,  # source, package, version, sha256; None = random
            "init_from": self.init_from,  # model.init_from's file and sha256; None = not set
            "data_counts": self.data_counts,
        }
        test = self._test_holdout()
        if test is not None and self.test is not None:
            # "best" is the selection holdout's number at the epoch chosen on it (biased upwards);
            # this one the selection never saw.
            summary["test_holdout"] = test.summary()
            summary["test_holdout_images"] = len(self.test)
        atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2))
        if self.tracker is not None:
            self.tracker.finish(self.run_dir, summary)
        if self.tb is not None:
            self.tb.close()
        log.info(
            "done: best %s %.4f at epoch %d%s; run folder %s",
            summary["select_metric"],
            p.best or 0.0,
            p.best_epoch,
            ""
            if test is None
            else f"; test holdout avg_class_acc {_num(test.avg_class_acc)} "
            f"overall_acc {_num(test.overall_acc)} (unbiased; undecoded: `fashattr calibrate`, then `eval`, decodes)",
            self.run_dir,
        )

    def _test_holdout(self) -> Metrics | None:
        """The best weights' metrics on the test holdout, computed as ``fashattr eval RUN --split
        test_holdout`` computes them: the weights read back from best.safetensors, fp32, the same batch size
        and memory format (tests/test_eval_holdout.py checks that the two agree exactly)."""
        if self.test is None or not (self.run_dir / "best.safetensors").is_file():
            return None
        assert self.test.labels is not None
        best = copy.deepcopy(self.eval_model)
        best.load_state_dict(load_weights(self.run_dir / "best.safetensors"))
        d = self.cfg.data
        test = self.test
        if inference_data(d) is not d:  # data.eval_size: read at the size the model is used at, as eval reads it
            _, test = load_split(inference_data(d), TEST_HOLDOUT, progress=self.cfg.train.progress)
        assert test.labels is not None
        scores = predict_scores(
            best,
            test.pixels(),
            d.mean,
            d.std,
            self.cfg.train.eval_batch_size,
            self.device,
            None,
            self.channels_last,
        )
        metrics = compute_metrics(self.schema, test.labels, scores)
        log.info(
            "test holdout: %d images never trained or selected on, at %d px; best.safetensors (epoch %d):\n%s",
            len(test),
            inference_data(d).image_size,
            self.progress.best_epoch,
            metrics.table(),
        )
        return metrics


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # TensorBoard is optional
        return None
    return SummaryWriter(str(run_dir / "tb"))


_HANDLERS: list[logging.Handler] = []  # this module's own, replaced run by run


def _setup_logging(run_dir: Path, main: bool = True) -> None:
    """Log to the run's train.log and to stderr (one pair of handlers at a time); processes
    other than rank 0 log warnings to stderr only."""
    log.setLevel(logging.INFO if main else logging.WARNING)
    while _HANDLERS:
        h = _HANDLERS.pop()
        log.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if main:
        handlers.insert(0, logging.FileHandler(run_dir / "train.log"))
    for h in handlers:
        h.setFormatter(fmt)
        log.addHandler(h)
        _HANDLERS.append(h)
    log.propagate = False


def _log_failure(error: BaseException) -> None:
    """Write why the run stopped into train.log, so a run folder never hides it (the caller,
    e.g. the CLI, reports it on stderr: not logged there twice). A traceback only for an
    unexpected error: the CLI's one-line errors (USER_ERRORS) say all in their message."""
    expected = isinstance(error, USER_ERRORS)
    if isinstance(error, KeyboardInterrupt):
        message = "interrupted (KeyboardInterrupt)"
    else:
        message = str(error) if expected else f"{type(error).__name__}: {error}"
    exc_info = None if expected or isinstance(error, KeyboardInterrupt) else (type(error), error, error.__traceback__)
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "run stopped: %s", (message,), exc_info)
    for h in _HANDLERS:
        if isinstance(h, logging.FileHandler):
            h.handle(record)


def new_run_dir(cfg: Config) -> Path:
    name = cfg.name or f"{cfg.model.backbone}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir = Path(cfg.out_dir) / name
    if (run_dir / CHECKPOINT).exists():
        raise FileExistsError(
            f"run folder {run_dir} already holds a run; resume it with --resume {run_dir} or choose another name="
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _num(value: float | None) -> str:
    """A metric for the log: four decimals, or n/a where the schema has none (no single-label group)."""
    return "n/a" if value is None else f"{value:.4f}"


def fit(
    cfg: Config | None = None,
    resume: str | Path | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    tracking_parent: Tracker | None = None,
) -> Path:
    """Train a model; returns the run folder.

    Under ``torchrun`` every process calls this; they join one process group, rank 0 creates
    and writes the run folder, and all train their shards of each batch.

    Args:
        cfg: the configuration of a new run.
        resume: a run folder to continue exactly where its last checkpoint left it
            (its own config.yaml is used; ``cfg`` must then be None).
        on_epoch: called after every epoch (and its checkpoint) with the number of epochs done
            and that epoch's metrics row; an exception it raises ends the run.
        tracking_parent: with ``tracking: mlflow``, the MLflow run this one is nested under (a tune study's).
    """
    if (cfg is None) == (resume is None):
        raise ValueError("give either a config for a new run or a run folder to resume")
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / CHECKPOINT).exists():
            raise FileNotFoundError(f"{run_dir} has no {CHECKPOINT} to resume from")
        cfg = load_config(run_dir / "config.yaml")
    assert cfg is not None
    place = distributed.init(resolve_device(cfg.train.device).type)
    if resume is None:
        if place.main:
            run_dir = new_run_dir(cfg)
            save_config(cfg, run_dir / "config.yaml")
        run_dir = distributed.broadcast(run_dir if place.main else Path(), place)
    _setup_logging(run_dir, place.main)
    trainer = None
    try:
        trainer = Trainer(cfg, run_dir, resume=resume is not None, on_epoch=on_epoch, tracking_parent=tracking_parent)
        if place.main:
            trainer.schema.save(run_dir / "schema.yaml")
        if resume is None and place.main:
            np.savetxt(run_dir / "eval_rows.txt", trainer.eval.rows, fmt="%d")
            if trainer.test is not None:
                np.savetxt(run_dir / "test_rows.txt", trainer.test.rows, fmt="%d")
            test_skipped = trainer.test.skipped if trainer.test is not None else {}
            skipped = {**trainer.train.skipped, **trainer.eval.skipped, **test_skipped}
            if skipped:  # data.on_bad_image=skip: what was left out, and why
                atomic_write_text(
                    run_dir / "skipped_images.txt", "".join(f"{p}\t{why}\n" for p, why in skipped.items())
                )
        if resume is None:
            trainer.save()  # every process (it gathers their random states): a run killed in epoch 1 resumes
        result = trainer.run()
    except BaseException as e:
        if place.main:
            _log_failure(e)
        if trainer is not None and trainer.tracker is not None:
            trainer.tracker.end("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        distributed.close(place, wait=False)
        raise
    distributed.close(place)
    return result
