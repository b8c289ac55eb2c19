"""Training end to end on a tiny dataset: determinism, exact resume after SIGKILL, CLI verbs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from safetensors.torch import load_file
from test_schedules import expected_lr

from fashattr.config import load_config
from fashattr.engine.checkpoint import load_checkpoint
from fashattr.engine.trainer import TIMING_COLUMNS, Trainer, fit

ROOT = Path(__file__).resolve().parents[1]


def weights(run: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return load_file(str(run / f"{which}.safetensors"))


def metric_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


def train_tiny(data: Path, cache: Path, out: Path, name: str, extra: dict | None = None) -> Path:
    """Train on the tiny dataset with the fast test settings plus ``extra`` overrides."""
    return fit(load_config(None, tiny_overrides(data, cache, out, name=name, **(extra or {}))))


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_run_folder_contents_and_determinism(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    runs = []
    for name in ("a", "b"):
        cfg = load_config(
            None,
            tiny_overrides(
                tiny_data, cache_dir, tmp_path, name=name, **{"augment.degrees": 10, "model.drop_rate": 0.2}
            ),
        )
        runs.append(fit(cfg))
    a, b = runs
    for f in (
        "config.yaml",
        "schema.yaml",
        "metrics.csv",
        "train.log",
        "summary.json",
        "best.safetensors",
        "last.safetensors",
        "checkpoint.pt",
        "eval_rows.txt",
    ):
        assert (a / f).exists(), f
    assert same_weights(weights(a), weights(b))
    assert metric_rows(a) == metric_rows(b)
    rows = metric_rows(a)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    summary = json.loads((a / "summary.json").read_text())
    assert summary["best_epoch"] in (1, 2) and summary["select_metric"] == "avg_class_acc"
    # a config.yaml reproduces its run
    c = fit(load_config(a / "config.yaml", ["name=c"]))
    assert same_weights(weights(a), weights(c))
    # another seed gives other weights
    d = fit(load_config(a / "config.yaml", ["name=d", "train.seed=1"]))
    assert not same_weights(weights(a), weights(d))
    # the checkpoint loads without unpickling arbitrary objects
    assert load_checkpoint(a / "checkpoint.pt")["progress"]["epoch"] == 2


def test_existing_run_folder_is_not_overwritten(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    cfg = load_config(None, tiny_overrides(tiny_data, cache_dir, tmp_path, name="x", **{"train.epochs": 1}))
    fit(cfg)
    with pytest.raises(FileExistsError, match="--resume"):
        fit(cfg)


@pytest.mark.parametrize("sched", ["cosine", "step", "cosine_restarts", "onecycle", "constant"])
def test_schedulers_and_sgd_train(sched: str, tiny_data: Path, cache_dir: Path, tmp_path: Path):
    epochs = 3
    run = train_tiny(
        tiny_data,
        cache_dir,
        tmp_path,
        sched,
        {
            "train.epochs": epochs,
            "sched.name": sched,
            "sched.warmup_epochs": 1,
            "sched.step_epochs": 1,
            "sched.restart_epochs": 1,
            "sched.restart_mult": 2,
            "optim.name": "sgd",
            "optim.lr": 0.05,
            "train.grad_clip": 1.0,
            "loss.name": "focal",
            "loss.class_weights": "effective",
            "model.head_layers": 2,
            "model.head_width": 16,
        },
    )
    rows = metric_rows(run)
    assert len(rows) == epochs and all(np.isfinite(float(r["train_loss"])) for r in rows)
    # The lr the trainer logged after each epoch is the schedule's formula at that step (the
    # per-step curves are checked in test_schedules.py). 118 training rows / 16 = 7 steps per epoch.
    cfg = load_config(run / "config.yaml")
    for e, row in enumerate(rows, 1):
        want = expected_lr(cfg.sched, 0.05, e * 7, 7, epochs)
        assert float(row["lr"]) == pytest.approx(want, rel=0, abs=1e-9), f"epoch {e}"


def test_early_stopping(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    # Training lowers the holdout loss every early epoch, so "the highest eval loss" is epoch 1's
    # and never improves: with patience 2 the run must stop after epoch 3 of 6.
    run = train_tiny(
        tiny_data,
        cache_dir,
        tmp_path,
        "es",
        {
            "train.epochs": 6,
            "train.early_stop_patience": 2,
            "train.select_metric": "eval_loss",
            "train.select_mode": "max",
        },
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] == 1
    assert summary["stopped_early"] is True and summary["epochs_run"] == 3
    losses = [float(r["eval_loss"]) for r in metric_rows(run)]
    assert losses[0] > losses[1] > losses[2]


def _train_cmd(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "fashattr", "train", *args]


# Every source of randomness on: dropout, the balanced sampler, every augmentation, mixup/cutmix.
FULL_RANDOM = {
    "data.sampler": "balanced",
    "augment.degrees": 15,
    "augment.rrc": 0.5,
    "augment.brightness": 0.3,
    "augment.hue": 0.1,
    "augment.grayscale": 0.2,
    "augment.blur": 0.3,
    "augment.erasing": 0.3,
    "augment.mixup": 0.4,
    "augment.cutmix": 1.0,
    "augment.mix_prob": 0.7,
}


FINE_TUNE = {  # freezing that changes at an epoch end, discriminative lrs, EMA, restarts
    "train.freeze_epochs": 1,
    "train.trainable_stages": 3,
    "optim.layer_decay": 0.7,
    "train.ema_decay": 0.9,
    "sched.name": "cosine_restarts",
    "sched.restart_epochs": 1,
}


@pytest.mark.parametrize(
    "extra", [{}, FULL_RANDOM, FINE_TUNE], ids=["plain", "sampler+augment+mix", "freeze+layer_decay+ema"]
)
def test_sigkill_mid_epoch_then_resume_is_bit_exact(tiny_data: Path, cache_dir: Path, tmp_path: Path, extra: dict):
    # 160 images, 25% holdout -> 118 train -> 7 steps of 16 per epoch; checkpoint every 2 steps.
    over = tiny_overrides(
        tiny_data,
        cache_dir,
        tmp_path,
        **{"train.epochs": 3, "train.checkpoint_every": 2, "model.drop_rate": 0.3, **extra},
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(_train_cmd([*over, "name=whole"]), check=True, env=env, capture_output=True)
    whole = tmp_path / "whole"

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd([*over, "name=killed"]), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    # Kill once a mid-epoch checkpoint of epoch 2 (or, if a loaded machine made the poll miss that
    # window, of epoch 3) is on disk: a point where an epoch is half done.
    while time.time() < deadline and proc.poll() is None:
        ckpt = killed / "checkpoint.pt"
        if ckpt.exists():
            try:
                p = load_checkpoint(ckpt)["progress"]
            except Exception:  # never torn (atomic), but the file may be replaced while we read
                p = None
            if p is not None and p["epoch"] >= 1 and p["step"] >= 2:
                break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(killed / "checkpoint.pt")["progress"]
    # The kill landed mid-epoch: the checkpoint on disk is a step checkpoint of an unfinished epoch.
    assert state["epoch"] < 3 and state["step"] > 0, f"not killed mid-epoch: {state['epoch']=} {state['step']=}"
    interrupted = weights(killed)
    assert not same_weights(interrupted, weights(whole))

    subprocess.run(
        [sys.executable, "-m", "fashattr", "train", "--resume", str(killed)], check=True, env=env, capture_output=True
    )
    assert same_weights(weights(killed), weights(whole))
    assert same_weights(weights(killed, "best"), weights(whole, "best"))
    assert metric_rows(killed) == metric_rows(whole)
    assert f"resumed at epoch {state['epoch'] + 1} step {state['step']}\n" in (killed / "train.log").read_text()


def test_cli_eval_and_predict(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    run = train_tiny(tiny_data, cache_dir, tmp_path, "cli")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fashattr", *args], capture_output=True, text=True, cwd=tmp_path)

    r = cli("eval", str(run), "--split", "holdout")
    assert r.returncode == 0, r.stderr
    assert "average per-class accuracy" in r.stdout
    report = json.loads((run / "eval_holdout.json").read_text())
    best = json.loads((run / "summary.json").read_text())["best"]
    assert report["summary"]["avg_class_acc"] == pytest.approx(best["avg_class_acc"], abs=1e-6)

    for split, n in (("test", 20), ("val", 24)):
        r = cli("predict", str(run), "--split", split, "--out", f"{split}.txt")
        assert r.returncode == 0, r.stderr
        lines = (tmp_path / f"{split}.txt").read_text().splitlines()
        assert len(lines) == n
        for line in lines:
            idx = [int(v) for v in line.split()]
            assert len(idx) == 6 and all(0 <= v < s for v, s in zip(idx, [7, 3, 3, 4, 6, 3], strict=True))

    r = cli("eval", str(run), "--split", "test")
    assert r.returncode == 2 and "has no labels" in r.stderr

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes((tiny_data / "img" / "00001.jpg").read_bytes())
    (tmp_path / "photos" / "b.jpg").write_text("not an image")
    # The default reports a bad image (stderr and an error record) and predicts the rest.
    r = cli("predict", str(run), "photos", "--out", "p.json")
    assert r.returncode == 0, r.stderr
    assert f"warning: {Path('photos') / 'b.jpg'}: not an image Pillow can identify" in r.stderr
    result = json.loads((tmp_path / "p.json").read_text())
    assert [Path(x["path"]).name for x in result] == ["a.jpg", "b.jpg"]
    assert result[1] == {"path": str(Path("photos") / "b.jpg"), "error": "not an image Pillow can identify"}
    r = cli("predict", str(run), "photos", "--out", "p2.json", "--on-bad-image", "error")
    assert r.returncode == 2 and "b.jpg: not an image" in r.stderr
    sleeve = result[0]["groups"]["sleeve"]
    assert sleeve["class"] in ("long_sleeve", "short_sleeve", "sleeveless") and 0 < sleeve["prob"] <= 1
    r = cli("predict", str(run), "photos/a.jpg", "--out", "p.csv")
    assert r.returncode == 0, r.stderr
    header, row = (tmp_path / "p.csv").read_text().splitlines()
    assert header.startswith("path,pattern,pattern_prob,sleeve")
    assert row.split(",")[3] == sleeve["class"]


def test_readme_predictor_snippet(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    """The README's load-and-predict snippet, run in a fresh interpreter."""
    run = train_tiny(tiny_data, cache_dir, tmp_path, "snip", {"train.epochs": 1})
    readme = (ROOT / "README.md").read_text()
    snippet = readme.split("<!-- predictor-snippet -->")[1].split("```python")[1].split("```")[0]
    snippet = snippet.replace("runs/cpu_resnet18", str(run)).replace("my_dress.jpg", str(tiny_data / "img/00003.jpg"))
    r = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "sleeve" in r.stdout


def test_bf16_autocast_and_channels_last_on_cpu(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    """The GPU path's precision and memory format, exercised on CPU (same code, device chosen at run time)."""
    over = tiny_overrides(
        tiny_data,
        cache_dir,
        tmp_path,
        name="bf16",
        **{"train.epochs": 1, "train.amp": "bf16", "train.channels_last": True},
    )
    run = tmp_path / "bf16"
    run.mkdir()
    trainer = Trainer(load_config(None, over), run, resume=False)
    steps: list[tuple[torch.dtype, bool, set[torch.dtype]]] = []

    def record(module: torch.nn.Module, inputs: tuple[torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        if module.training:  # the training steps (the holdout's precision is evaluation's business)
            x = inputs[0]
            steps.append(
                (x.dtype, x.is_contiguous(memory_format=torch.channels_last), {v.dtype for v in outputs.values()})
            )

    trainer.model.register_forward_hook(record)
    trainer.run()
    # every step: float32 channels_last images in, bfloat16 logits out (the model ran under bf16 autocast)
    assert steps == [(torch.float32, True, {torch.bfloat16})] * len(trainer.loader)
    assert len(trainer.loader) == 7
    w = weights(run)  # the weights themselves stay float32 (autocast casts per operation)
    assert {v.dtype for v in w.values() if v.is_floating_point()} == {torch.float32}
    assert all(torch.isfinite(v).all() for v in w.values())
    assert float(metric_rows(run)[0]["avg_class_acc"]) > 0
