"""`fashattr tune`: an Optuna study in SQLite, constraints before training, pruning, resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import tiny_overrides

from fashattr.config import ConfigError, load_config
from fashattr.tune import base_params, load_spec, suggest


def write_config(path: Path, data: Path, cache: Path, out: Path, tune: dict) -> Path:
    over = dict(o.split("=", 1) for o in tiny_overrides(data, cache, out))
    config: dict = {}
    for key, value in over.items():
        section, _, name = key.rpartition(".")
        (config.setdefault(section, {}) if section else config)[name] = yaml.safe_load(value)
    config["tune"] = tune
    path.write_text(yaml.safe_dump(config))
    return path


SPACE = {
    "optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    "model.backbone": {"type": "categorical", "choices": ["test_resnet", "resnet18"]},
}


def test_study_prunes_over_budget_models_resumes_and_writes_the_best(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    tune = {"space": SPACE, "constraints": {"max_params_m": 1.0, "max_latency_ms": 5000}, "seed": 3}
    config = write_config(tmp_path / "tune.yaml", tiny_data, cache_dir, tmp_path, tune)
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "fashattr", "tune", str(config), "--trials", "4", "--out", str(out)]
    first = subprocess.run(cmd, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    study = optuna.load_study(study_name="tune", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 4
    for t in study.trials:
        if t.params["model.backbone"] == "resnet18":  # 11 M parameters > 1 M: never trained
            assert t.state == optuna.trial.TrialState.PRUNED
            assert t.user_attrs["pruned_because"].startswith("params_m 11.")
            assert not (out / "trials" / f"trial-{t.number:04d}").exists()
        else:
            assert t.user_attrs["params_m"] < 1.0 and t.user_attrs["latency_ms"] > 0
            # the holdout metric was reported after every epoch (what the pruner decides on)
            assert t.intermediate_values and set(t.intermediate_values) <= {1, 2}
            if t.state == optuna.trial.TrialState.COMPLETE:
                assert t.value == max(t.intermediate_values.values())
    assert "pruned" in first.stdout or all(t.params["model.backbone"] == "test_resnet" for t in study.trials)
    assert "best: trial" in first.stdout and "latency_ms" in first.stdout

    # the worker that created the study sampled with tune.seed: the same draws as a fresh TPE(seed=3)
    assert [t.user_attrs["sampler_seed"] for t in study.trials] == [3] * 4
    replay, space = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3)), load_spec(config).space
    for t in study.trials:
        ask = replay.ask()
        suggest(ask, space)  # in the config file's key order, as the study drew them
        assert ask.params == t.params
        replay.tell(ask, state=optuna.trial.TrialState.PRUNED)

    again = subprocess.run([*cmd[:-4], "--trials", "5", "--out", str(out)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = optuna.load_study(study_name="tune", storage=f"sqlite:///{out / 'study.db'}").trials
    assert len(resumed) == 5
    assert resumed[4].user_attrs["sampler_seed"] != 3  # a resumed study joins it: seed 3 would redraw trial 0
    assert resumed[4].params != resumed[0].params

    best = load_config(out / "best.yaml")  # a runnable recipe
    trial = study.best_trial
    assert best.optim.lr == pytest.approx(trial.params["optim.lr"]) and best.model.backbone == "test_resnet"


def test_spec_errors_name_the_key(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    bad = {"space": {"optim.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2}}}
    with pytest.raises(ConfigError, match=r"optim\.learning_rate"):
        load_spec(write_config(tmp_path / "a.yaml", tiny_data, cache_dir, tmp_path, bad))
    bad = {"space": {"optim.lr": {"type": "float", "low": 1e-2, "high": 1e-3}}}
    with pytest.raises(ConfigError, match=r"tune.space.optim.lr: needs low < high"):
        load_spec(write_config(tmp_path / "b.yaml", tiny_data, cache_dir, tmp_path, bad))
    bad = {"space": SPACE, "constraints": {"max_param": 3}}
    with pytest.raises(ConfigError, match="did you mean 'max_params_m'"):
        load_spec(write_config(tmp_path / "c.yaml", tiny_data, cache_dir, tmp_path, bad))
    bad = {"space": SPACE, "seed": -1}
    with pytest.raises(ConfigError, match=r"d.yaml: tune.seed -1: an integer from 0 to 2\*\*32 - 1"):
        load_spec(write_config(tmp_path / "d.yaml", tiny_data, cache_dir, tmp_path, bad))


def test_two_workers_share_one_study(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    tune = {"space": {"optim.lr": SPACE["optim.lr"]}, "pruner": "none"}
    config = write_config(tmp_path / "shared.yaml", tiny_data, cache_dir, tmp_path, tune)
    out, storage = tmp_path / "study", f"sqlite:///{tmp_path / 'one.db'}"
    cmd = [sys.executable, "-m", "fashattr", "tune", str(config), "--trials", "4", "--storage", storage]
    cmd += ["--out", str(out)]
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in "ab"]
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err.decode()[-3000:]
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    # each worker stops once the study holds 4 finished trials; both may be mid-trial then
    assert 4 <= len(trials) <= 5 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    runs = {t.user_attrs["run"] for t in trials}
    assert len(runs) == len(trials)  # every trial trained into its own folder
    # one worker created the study and sampled with tune.seed (0), the other joined with its own
    # seed: no two trials drew the same learning rate (with one seed both drew it first)
    assert sorted({t.user_attrs["sampler_seed"] for t in trials})[0] == 0
    assert len({t.user_attrs["sampler_seed"] for t in trials}) == 2
    assert len({t.params["optim.lr"] for t in trials}) == len(trials)


def test_baseline_trial_is_the_configs_own_values_and_is_queued_once(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    tune = {"space": SPACE, "pruner": "none", "seed": 5}
    config = write_config(tmp_path / "base.yaml", tiny_data, cache_dir, tmp_path, tune)
    assert base_params(load_spec(config)) == {"optim.lr": 3e-3, "model.backbone": "test_resnet"}
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "fashattr", "tune", str(config), "--baseline", "--out", str(out)]
    first = subprocess.run([*cmd, "--trials", "1"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "the config's own values" in first.stdout
    again = subprocess.run([*cmd, "--trials", "2"], capture_output=True, text=True)  # resumed: not queued again
    assert again.returncode == 0, again.stderr[-3000:]
    assert "queues nothing" in again.stderr
    trials = optuna.load_study(study_name="base", storage=f"sqlite:///{out / 'study.db'}").trials
    assert [t.user_attrs.get("baseline", False) for t in trials] == [True, False]
    assert trials[0].params == {"optim.lr": 3e-3, "model.backbone": "test_resnet"}
    assert trials[0].state == optuna.trial.TrialState.COMPLETE
    assert load_config(Path(trials[0].user_attrs["run"]) / "config.yaml").optim.lr == 3e-3  # trained as the config


def test_baseline_outside_the_space_is_refused(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    narrow = {"space": {"optim.lr": {"type": "float", "low": 1e-2, "high": 1e-1, "log": True}}}
    config = write_config(tmp_path / "narrow.yaml", tiny_data, cache_dir, tmp_path, narrow)
    with pytest.raises(ConfigError, match=r"--baseline: the config's optim.lr = 0.003 is not in \[0.01, 0.1\]"):
        base_params(load_spec(config))
    choices = {"space": {"model.backbone": {"type": "categorical", "choices": ["resnet18"]}}}
    config = write_config(tmp_path / "choices.yaml", tiny_data, cache_dir, tmp_path, choices)
    with pytest.raises(ConfigError, match=r"model.backbone = 'test_resnet' is not one of \['resnet18'\]"):
        base_params(load_spec(config))
