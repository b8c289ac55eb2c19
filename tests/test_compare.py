"""`fashattr compare`: one table of runs and their curves."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_overrides

from fashattr.config import load_config
from fashattr.engine.trainer import fit
from fashattr.errors import FashattrError
from fashattr.report.compare import compare_rows, load_run


@pytest.fixture(scope="module")
def two_runs(tiny_data: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("runs")
    a = fit(load_config(None, tiny_overrides(tiny_data, cache_dir, out, name="plain", recipe="plain CE")))
    b = fit(
        load_config(
            None,
            tiny_overrides(
                tiny_data, cache_dir, out, name="balanced", **{"loss.logit_adjust_tau": 1.0, "train.epochs": 3}
            ),
        )
    )
    return [a, b]


def test_compare_cli_table_csv_and_plot(two_runs: list[Path], tmp_path: Path):
    cmd = [sys.executable, "-m", "fashattr", "compare", *map(str, two_runs), "--out", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    header = out.stdout.splitlines()[0].split()
    assert header[:9] == [
        "run",
        "recipe",
        "backbone",
        "size",
        "used_at",
        "params_m",
        "mb",
        "avg_class_acc",
        "overall_acc",
    ]
    assert {"pattern", "fit", "best_epoch", "wall_s"} <= set(header)
    rows = list(csv.DictReader((tmp_path / "compare.csv").open()))
    assert {r["run"] for r in rows} == {"plain", "balanced"}
    plain = next(r for r in rows if r["run"] == "plain")
    summary = json.loads((two_runs[0] / "summary.json").read_text())
    assert float(plain["avg_class_acc"]) == pytest.approx(summary["best"]["avg_class_acc"])
    assert float(plain["pattern"]) == pytest.approx(summary["best"]["pattern/avg_class_acc"])
    assert plain["recipe"] == "plain CE" and plain["best_epoch"].endswith("/2")
    assert plain["size"] == plain["used_at"] == "32"  # no data.eval_size: used at the size it trained at
    assert float(plain["mb"]) == pytest.approx((two_runs[0] / "best.safetensors").stat().st_size / 1e6, abs=0.06)
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_used_at_is_the_size_a_run_is_evaluated_at(two_runs: list[Path], tmp_path: Path):
    """Trained at 32 px and used at 40 (data.eval_size, as cpu_pretrained trains at 224 and is used at 288):
    the table names both sides, since its test-holdout columns were read at the second."""
    run = tmp_path / "fixres"
    run.mkdir()
    cfg = yaml.safe_load((two_runs[0] / "config.yaml").read_text())
    cfg["data"]["eval_size"] = 40
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "metrics.csv").write_bytes((two_runs[0] / "metrics.csv").read_bytes())
    (row,) = compare_rows([load_run(run)])
    assert (row["size"], row["used_at"]) == (32, 40)


def test_a_run_without_summary_uses_its_best_epoch_so_far(two_runs: list[Path], tmp_path: Path):
    run = tmp_path / "killed"
    run.mkdir()
    for f in ("config.yaml", "metrics.csv"):
        (run / f).write_bytes((two_runs[1] / f).read_bytes())
    info = load_run(run)
    history = info.history
    assert info.best == max(history, key=lambda r: r["avg_class_acc"]) and info.epochs_run == 3
    with pytest.raises(FashattrError, match=r"no config\.yaml; not a run folder"):
        load_run(tmp_path)
