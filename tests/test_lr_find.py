"""The learning-rate range test: the rules on curves computed by hand, and a real run."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides

from fashattr.engine.lr_find import steepest, valley


def test_steepest_is_the_most_negative_slope():
    lrs = 10.0 ** np.arange(-6, 0.01, 0.5)  # 13 points, 0.5 decades apart
    losses = np.array([2.0, 2.0, 1.99, 1.95, 1.8, 1.2, 0.9, 0.8, 0.75, 0.74, 0.9, 1.5, 3.0])
    # central differences: the fall from 1.8 to 0.9 around index 5 (1e-3.5) is the steepest
    assert steepest(lrs, losses, skip_start=0, skip_end=0) == pytest.approx(10**-3.5)
    assert steepest(lrs, losses, skip_start=6, skip_end=2) == pytest.approx(10**-3.0)  # window moves


def test_valley_is_about_halfway_down_the_longest_decrease():
    lrs = np.arange(1, 13, dtype=float)
    losses = np.array([3.0, 3.1, 2.9, 2.5, 2.2, 2.0, 1.6, 1.5, 1.4, 1.3, 2.0, 5.0])
    # longest decreasing subsequence: 3.0 2.9 2.5 2.2 2.0 1.6 1.5 1.4 1.3 = 9 points ending at
    # index 9; fastai's start = end - length = 0, sections = 9 / 3 = 3 -> index 0 + 3 + 1 = 4
    assert valley(lrs, losses) == 5.0


def test_lr_find_cli_writes_the_plot_and_a_suggestion(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    over = tiny_overrides(tiny_data, cache_dir, tmp_path, **{"optim.layer_decay": 0.5})
    cmd = [sys.executable, "-m", "fashattr", "lr-find", *over, "--steps", "30", "--out", str(tmp_path / "lr")]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "suggested (valley): optim.lr=" in out.stdout
    result = json.loads((tmp_path / "lr" / "lr_find.json").read_text())
    lrs = result["lrs"]
    assert lrs[0] == pytest.approx(1e-7) and all(b > a for a, b in itertools.pairwise(lrs))
    # 30 steps from 1e-7 to 10 unless the loss diverged first
    assert len(lrs) == 30 or result["stopped_early"]
    assert lrs[0] <= result["suggestion"] <= lrs[-1]
    png = (tmp_path / "lr" / "lr_find.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not (tmp_path / "lr-find").exists() and not list(tmp_path.glob("runs*"))  # no run written
