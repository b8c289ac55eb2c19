"""torchrun with 2 CPU processes (gloo) against one process with the same global batch."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_overrides
from safetensors.torch import load_file

from fashattr.config import Config, load_config
from fashattr.data.augment import BatchAugment
from fashattr.engine.checkpoint import load_checkpoint, save_checkpoint
from fashattr.engine.finetune import frozen_stages, stage_of
from fashattr.engine.trainer import TIMING_COLUMNS, Trainer, fit

# test_vit has LayerNorm only: a per-sample model, so averaging the two halves' gradients is
# the full batch's gradient and the runs may differ only by floating-point summation order.
SETTINGS = {
    "model.backbone": "test_vit",
    "augment.hflip": 0.0,
    "train.epochs": 2,
    "train.batch_size": 16,
    "train.threads": 1,
    "optim.lr": 1e-3,
}
# Stated tolerance on the final weights (absolute): SGD 1e-5 (only summation order differs);
# AdamW 1e-3, because it divides each update by the gradient's running magnitude, so parameters
# with near-zero gradients move by up to lr per step whatever the sign noise (measured: 1.6e-4
# after 14 steps at lr 1e-3). Holdout metrics and losses within 0.01.
WEIGHT_ATOL = {"sgd": 1e-5, "adamw": 1e-3}
METRIC_ATOL = 0.01


def initial_weights(cfg: Config, run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, int], int]:
    """The weights a run of ``cfg`` starts from (built as the run builds them, not trained), each
    parameter's backbone stage and the number of stages."""
    run_dir.mkdir()
    model = Trainer(cfg, run_dir, resume=False).model
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, *stage_of(model)


def _metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


FREEZE = {"train.freeze_epochs": 1, "train.trainable_stages": 3}  # DDP rebuilt when freezing changes


@pytest.mark.parametrize(
    ("optimizer", "extra"), [("sgd", {}), ("adamw", {}), ("sgd", FREEZE)], ids=["sgd", "adamw", "sgd+freeze"]
)
def test_two_processes_match_one(tiny_data: Path, cache_dir: Path, tmp_path: Path, optimizer: str, extra: dict):
    settings = {**SETTINGS, "optim.name": optimizer, **extra}
    single = fit(load_config(None, tiny_overrides(tiny_data, cache_dir, tmp_path, name="single", **settings)))
    over = tiny_overrides(tiny_data, cache_dir, tmp_path, name="ddp", **settings)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "fashattr", "train", *over]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    ddp = tmp_path / "ddp"

    summary = json.loads((ddp / "summary.json").read_text())
    assert summary["processes"] == 2
    # rank 0 alone writes: one log with one line per epoch
    assert (ddp / "train.log").read_text().count("epoch 2/2") == 1

    a, b = load_file(single / "last.safetensors"), load_file(ddp / "last.safetensors")
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"{optimizer}: largest weight difference {worst:.3g}")
    assert worst < WEIGHT_ATOL[optimizer], f"largest weight difference {worst:.3g}"
    # The agreement means something only if training moved the weights far beyond it: compare with
    # the initial weights (a Trainer built from the same config, before it trains).
    cfg = load_config(single / "config.yaml")
    init, stage, n_stages = initial_weights(cfg, tmp_path / "init")
    print(f"{optimizer}: largest move from the initial weights {max((a[k] - init[k]).abs().max() for k in a):.3g}")
    frozen = frozen_stages(cfg, n_stages, cfg.train.epochs - 1)  # stages never unfrozen (freezing only lifts)
    for k in stage:  # every parameter trained, by far more than the two runs disagree on it; frozen ones stayed
        moved, apart = (a[k] - init[k]).abs().max().item(), (a[k] - b[k]).abs().max().item()
        if stage[k] < frozen:
            assert moved == 0 and apart == 0, f"{k} is frozen but moved {moved:.3g}"
        else:
            assert moved > 10 * apart, f"{k}: moved {moved:.3g} from its initial values, runs {apart:.3g} apart"
    assert frozen == (n_stages - 3 if extra else 0) and frozen < n_stages

    for one, two in zip(_metrics(single), _metrics(ddp), strict=True):
        for key in ("train_loss", "eval_loss", "avg_class_acc", "overall_acc"):
            assert float(one[key]) == pytest.approx(float(two[key]), abs=METRIC_ATOL), key


# Augmentation and dropout on: each process must draw its own (ranks' shards differ) and a resumed
# run must restore each process's own streams.
RANDOM = {
    "model.backbone": "test_vit",
    "model.drop_rate": 0.3,
    "augment.hflip": 0.5,
    "augment.rrc": 0.5,
    "augment.brightness": 0.3,
    "augment.erasing": 0.5,
    "train.epochs": 2,
    "train.batch_size": 16,
    "train.threads": 1,
    "train.checkpoint_every": 2,
}


def _torchrun(args: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return [*cmd, "-m", "fashattr", "train", *args]


def _descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (torchrun's workers run in sessions of their own)."""
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []
    return [c for child in children for c in (child, *_descendants(child))]


def _signal(pids: list[int], sig: signal.Signals) -> None:
    """Send ``sig`` to each process; one that has exited since it was listed (a helper torchrun had started and
    reaped meanwhile) is gone already and needs no signal."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _mid_epoch(run: Path) -> bool:
    """Whether ``run``'s checkpoint is a step checkpoint of the second epoch (after one whole epoch)."""
    try:
        p = load_checkpoint(run / "checkpoint.pt")["progress"]
    except Exception:  # not written yet, or replaced while we read (never torn: atomic)
        return False
    return p["epoch"] == 1 and p["step"] > 0


def test_two_processes_draw_their_own_randomness_and_resume_exactly(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    over = tiny_overrides(tiny_data, cache_dir, tmp_path, **RANDOM)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    out = subprocess.run(_torchrun([*over, "name=whole"]), capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    whole, killed = tmp_path / "whole", tmp_path / "killed"

    # 118 training rows: 59 per process, 8 a step -> 7 steps an epoch; checkpoints at steps 2, 4, 6. A run the
    # watcher never catches mid-epoch (it can outrun a 5 ms poll) is started again, up to three times.
    for _attempt in range(3):
        shutil.rmtree(killed, ignore_errors=True)
        proc = subprocess.Popen(
            _torchrun([*over, "name=killed"]), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        tree: list[int] = []  # the agent and both workers, frozen
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:  # until a step checkpoint of epoch 2 is on disk
            if _mid_epoch(killed):
                # Freeze the run, then look again: what is on disk now is what the kill leaves (a busy machine
                # may have let the run write its epoch-end checkpoint since the first look).
                tree = [proc.pid, *_descendants(proc.pid)]
                _signal(tree, signal.SIGSTOP)
                if _mid_epoch(killed):
                    break
                _signal(tree, signal.SIGCONT)
                tree = []
            time.sleep(0.005)
        _signal(tree or [proc.pid, *_descendants(proc.pid)], signal.SIGKILL)  # as a machine failure
        proc.wait()
        if tree:
            break
    state = load_checkpoint(killed / "checkpoint.pt")
    p = state["progress"]
    assert p["epoch"] == 1 and p["step"] > 0, f"not killed mid-epoch: {p['epoch']=} {p['step']=}"

    # (a) the checkpoint holds each process's own streams, and they differ: replayed on one same
    # batch, the two ranks' augmentations and dropout masks differ.
    rng = state["rng"]
    assert isinstance(rng, list) and len(rng) == 2
    cfg = load_config(killed / "config.yaml")
    augment = BatchAugment(cfg.augment, cfg.data.mean, cfg.data.std)
    pixels = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    views, masks = [], []
    for r in rng:
        views.append(augment(pixels, {}, torch.Generator().set_state(r["aug"]))[0])
        with torch.random.fork_rng():
            torch.set_rng_state(r["torch"])
            masks.append(torch.nn.functional.dropout(torch.ones(1000), 0.3))
    assert not torch.equal(views[0], views[1]) and not torch.equal(masks[0], masks[1])

    # (b) resumed under torchrun, the run ends exactly as the uninterrupted one
    out = subprocess.run(_torchrun(["--resume", str(killed)]), capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    for which in ("last", "best"):
        a, b = load_file(whole / f"{which}.safetensors"), load_file(killed / f"{which}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), which
    strip = [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in _metrics(whole)]
    assert [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in _metrics(killed)] == strip
    assert f"resumed at epoch 2 step {p['step']}\n" in (killed / "train.log").read_text()


def test_resume_with_another_number_of_processes_is_refused(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    run = fit(load_config(None, tiny_overrides(tiny_data, cache_dir, tmp_path, name="r", **{"train.epochs": 2})))
    ckpt = run / "checkpoint.pt"
    state = load_checkpoint(ckpt)
    assert isinstance(state["rng"], list) and len(state["rng"]) == 1  # one process: one set of streams
    state["progress"]["epoch"] = 1  # as if a 2-process run had been stopped after epoch 1
    state["rng"] = state["rng"] * 2
    save_checkpoint(state, ckpt)
    with pytest.raises(
        ValueError, match=re.escape(f"{ckpt} holds the random states of 2 process(es) but this run has 1")
    ):
        fit(resume=run)
