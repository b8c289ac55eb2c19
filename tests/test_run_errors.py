"""A run that stops on an error: one line on stderr (no traceback), the reason in train.log,
and what the run folder still holds (checkpoint, weights) kept and named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import tiny_overrides
from safetensors.torch import load_file

from fashattr.cli import main
from fashattr.engine.checkpoint import load_checkpoint
from fashattr.errors import CheckpointError


def train_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``fashattr train ARGS`` in this process: exit code and stderr."""
    code = main(["train", *args])
    return code, capsys.readouterr().err


def error_line(stderr: str) -> str:
    """The CLI's one error line; there must be exactly one and no traceback."""
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def logged_failure(run: Path) -> str:
    """The message of train.log's "run stopped" line."""
    found = re.findall(r" ERROR run stopped: (.*)", (run / "train.log").read_text())
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize(
    "case, expected",
    [
        ("select_metric", "train.select_metric 'bogus' unknown; choose from ["),
        ("no_labels", "train split 'val' has no labels"),
    ],
)
def test_failure_before_the_first_epoch_is_in_train_log(
    case: str, expected: str, tiny_data: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    extra = {"train.select_metric": "bogus"} if case == "select_metric" else {"data.train_split": "val"}
    code, err = train_cli(capsys, *tiny_overrides(tiny_data, cache_dir, tmp_path, name="early", **extra))
    assert code == 2
    line = error_line(err)
    assert line.startswith(f"error: {expected}")
    run = tmp_path / "early"
    assert (run / "config.yaml").is_file() and not (run / "checkpoint.pt").exists()
    assert logged_failure(run) == line.removeprefix("error: ")


def test_resume_from_a_truncated_checkpoint_names_it_and_what_is_left(
    tiny_data: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    code, err = train_cli(capsys, *tiny_overrides(tiny_data, cache_dir, tmp_path, name="cut", **{"train.epochs": 1}))
    assert code == 0, err
    run = tmp_path / "cut"
    ckpt = run / "checkpoint.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])  # e.g. a copy that ran out of disk

    code, err = train_cli(capsys, "--resume", str(run))
    assert code == 2
    line = error_line(err)
    last, best = run / "last.safetensors", run / "best.safetensors"
    assert line.startswith(f"error: {ckpt}: damaged, cannot be read (PytorchStreamReader failed")
    assert line.endswith(
        f"; still readable: {last} and {best} (1 epoch(s) done, per metrics.csv), the weights at the end of the "
        f"previous epoch; evaluate them with `fashattr eval {run} --weights last`, or start a new run from that "
        f"backbone with model.pretrained_file={last} (heads, optimizer and schedule start afresh)"
    )
    assert logged_failure(run) == line.removeprefix("error: ")
    # what the message offers works
    assert main(["eval", str(run), "--weights", "last"]) == 0


def test_a_file_that_is_no_checkpoint(tmp_path: Path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(bad))}: damaged, cannot be read \("):
        load_checkpoint(bad)
    torch.save({"model": {}}, bad)  # loads, but is no training state
    with pytest.raises(CheckpointError, match=r"holds no training state \(no 'progress'\)"):
        load_checkpoint(bad)


def test_non_finite_loss_is_one_line_and_keeps_the_checkpoint(
    tiny_data: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    # Epoch 1 trains at a sane lr; from epoch 2 the step schedule multiplies it by 1e30.
    extra = {"sched.name": "step", "sched.step_epochs": 1, "sched.gamma": 1e30}
    code, err = train_cli(capsys, *tiny_overrides(tiny_data, cache_dir, tmp_path, name="nan", **extra))
    assert code == 2
    line = error_line(err)
    run = tmp_path / "nan"
    ckpt = run / "checkpoint.pt"
    assert re.fullmatch(
        r"error: training loss became (nan|inf) within the \d+ steps before epoch 2 step \d+ \(lr [0-9.e+]+\); "
        + re.escape(
            f"{ckpt} still holds the state at the end of epoch 1. Lower optim.lr, set train.grad_clip (e.g. 1.0), "
            "check the data's labels and images, or use train.amp=bf16 rather than fp16; then train again"
        ),
        line,
    ), line
    assert logged_failure(run) == line.removeprefix("error: ")
    # the checkpoint is the one written after epoch 1: it loads, finite, equal to that epoch's weights
    state = load_checkpoint(ckpt)
    assert (state["progress"]["epoch"], state["progress"]["step"]) == (1, 0)
    last = load_file(str(run / "last.safetensors"))
    assert last.keys() == state["model"].keys()
    assert all(torch.equal(last[k], state["model"][k]) for k in last)
    assert all(torch.isfinite(v).all() for v in last.values() if v.is_floating_point())
    assert len((run / "metrics.csv").read_text().splitlines()) == 2  # header + epoch 1
