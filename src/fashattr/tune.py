"""``fashattr tune``: an Optuna study over a config's search space, under budgets.

The search space lives in the config file itself, in a ``tune:`` section that training ignores:

```yaml
tune:
  metric: avg_class_acc        # a metrics.csv column; default: train.select_metric
  direction: maximize          # default from train.select_mode
  pruner: median               # median | hyperband | none; pruning on the per-epoch metric
  seed: 0                      # the TPE sampler's seed (the study's creator; joiners mix in a nonce)
  constraints:                 # checked on the built model before a trial trains
    max_params_m: 5            # millions of parameters
    max_mb: 25                 # MB of saved weights (FASHION-HOW's limit is 25)
    max_latency_ms: 20         # CPU ms per image, batch 1, at the served size (data.eval_size, else image_size)
  space:                       # config keys -> distributions
    optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    model.backbone: {type: categorical, choices: [resnet10t, resnet18]}
    train.batch_size: {type: int, low: 32, high: 96, step: 32}
```

Storage is SQLite in the output folder by default, so an interrupted study resumes where it
stopped (``--trials`` is the total the study should hold); any SQLAlchemy URL lets several
workers share one study. A trial over a constraint is pruned before it trains, with the
reason recorded; the best trial's configuration is written as a runnable recipe.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from fashattr.config import Config, ConfigError, apply_overrides, config_from_dict, config_to_dict
from fashattr.fileio import atomic_write_text

log = logging.getLogger("fashattr")
TYPES = ("float", "int", "categorical")
CONSTRAINTS = ("max_params_m", "max_mb", "max_latency_ms")
PRUNERS = ("median", "hyperband", "none")


@dataclass
class TuneSpec:
    base: dict[str, Any]  # the config without its tune section
    space: dict[str, dict[str, Any]]
    metric: str
    direction: str
    pruner: str = "median"
    seed: int = 0
    constraints: dict[str, float] = field(default_factory=dict)


def load_spec(path: str | Path, overrides: list[str] | None = None) -> TuneSpec:
    """Read a config with a ``tune:`` section; every key and distribution is checked up front."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    data = yaml.safe_load(path.read_text()) or {}
    tune = data.pop("tune", None)
    if not isinstance(tune, dict) or not tune.get("space"):
        raise ConfigError(f"{path}: needs a tune: section with a space: of config keys to search")
    unknown = set(tune) - {"metric", "direction", "pruner", "seed", "constraints", "space"}
    if unknown:
        raise ConfigError(f"{path}: unknown tune keys {sorted(unknown)}")
    base = apply_overrides(data, overrides or [])
    cfg = config_from_dict(base)  # the base must be a valid config on its own
    space = tune["space"]
    for key, dist in space.items():
        _check_dist(path, key, dist)
        config_from_dict(apply_overrides(base, [f"{key}={_example(dist)}"]))  # the key must exist
    constraints = tune.get("constraints") or {}
    for name in constraints:
        if name not in CONSTRAINTS:
            close = difflib.get_close_matches(name, CONSTRAINTS, n=1)
            raise ConfigError(f"{path}: unknown constraint {name!r}{f'; did you mean {close[0]!r}?' if close else ''}")
    pruner = tune.get("pruner", "median")
    if pruner not in PRUNERS:
        raise ConfigError(f"{path}: tune.pruner {pruner!r}: choose from {PRUNERS}")
    seed = tune.get("seed", 0)
    if not isinstance(seed, int) or not 0 <= seed < 2**32:  # numpy's RandomState range, which TPE uses
        raise ConfigError(f"{path}: tune.seed {seed!r}: an integer from 0 to 2**32 - 1")
    direction = tune.get("direction") or ("maximize" if cfg.train.select_mode == "max" else "minimize")
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"{path}: tune.direction {direction!r}: maximize or minimize")
    return TuneSpec(
        base=base,
        space=space,
        metric=tune.get("metric") or cfg.train.select_metric,
        direction=direction,
        pruner=pruner,
        seed=seed,
        constraints={k: float(v) for k, v in constraints.items()},
    )


def _check_dist(path: Path, key: str, dist: Any) -> None:
    where = f"{path}: tune.space.{key}"
    if not isinstance(dist, dict) or dist.get("type") not in TYPES:
        raise ConfigError(f"{where}: needs type: one of {TYPES}, got {dist!r}")
    if dist["type"] == "categorical":
        if not isinstance(dist.get("choices"), list) or not dist["choices"]:
            raise ConfigError(f"{where}: a categorical needs a non-empty list of choices")
    elif not all(k in dist for k in ("low", "high")) or not dist["low"] < dist["high"]:
        raise ConfigError(f"{where}: needs low < high, got {dist!r}")


def _example(dist: dict[str, Any]) -> Any:
    return dist["choices"][0] if dist["type"] == "categorical" else dist["low"]


def as_overrides(params: dict[str, Any]) -> list[str]:
    """``{key: value}`` as ``key=value`` overrides (values written as YAML, as the CLI parses them)."""
    return [
        f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
        for k, v in params.items()
    ]


def base_params(spec: TuneSpec) -> dict[str, Any]:
    """The base config's own value of every searched key: the guess a search is measured against.

    Raises:
        ConfigError: a value outside its distribution (a float or int outside ``[low, high]``, a
            categorical not among its choices), which the study could not record as a trial.
    """
    cfg = config_from_dict(spec.base)
    params: dict[str, Any] = {}
    for key, d in spec.space.items():
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if d["type"] == "categorical":
            ok = value in d["choices"]
            allowed = f"one of {d['choices']}"
        else:
            ok = isinstance(value, int | float) and float(d["low"]) <= value <= float(d["high"])
            allowed = f"in [{d['low']}, {d['high']}]"
            if ok and d["type"] == "int" and (value - int(d["low"])) % int(d.get("step", 1)):
                ok, allowed = False, f"{allowed} on step {d.get('step', 1)}"
        if not ok:
            raise ConfigError(f"--baseline: the config's {key} = {value!r} is not {allowed} (tune.space.{key})")
        params[key] = value
    return params


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> list[str]:
    """The trial's values as ``key=value`` overrides."""
    values: dict[str, Any] = {}
    for key, d in space.items():
        if d["type"] == "float":
            value: Any = trial.suggest_float(key, float(d["low"]), float(d["high"]), log=bool(d.get("log", False)))
        elif d["type"] == "int":
            value = trial.suggest_int(key, int(d["low"]), int(d["high"]), step=int(d.get("step", 1)))
        else:
            value = trial.suggest_categorical(key, d["choices"])
        values[key] = value
    return as_overrides(values)


def cpu_latency_ms(model: torch.nn.Module, image_size: int, repeats: int = 10) -> float:
    """Median CPU milliseconds to classify one image (batch 1), after 3 warm-up calls."""
    model = model.eval()
    x = torch.rand(1, 3, image_size, image_size).contiguous(memory_format=torch.channels_last)
    model = model.to(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for i in range(3 + repeats):
            start = time.perf_counter()
            model(x)
            if i >= 3:
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def check_constraints(cfg: Config, constraints: dict[str, float], schema: Any) -> tuple[dict[str, float], str | None]:
    """Build the trial's model and measure it; returns (measurements, why it is over budget or None)."""
    from fashattr.models import create_model
    from fashattr.models.model import weights_mb

    model = create_model(replace(cfg.model, pretrained=False, pretrained_file=None), schema, cfg.data.image_size)
    measured = {
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "mb": weights_mb(model),
    }
    if "max_latency_ms" in constraints:
        # At the side the model will be served at: data.eval_size when the trial sets one.
        measured["latency_ms"] = cpu_latency_ms(model, cfg.data.eval_size or cfg.data.image_size)
    limits = {"max_params_m": "params_m", "max_mb": "mb", "max_latency_ms": "latency_ms"}
    for name, limit in constraints.items():
        value = measured[limits[name]]
        if value > limit:
            return measured, f"{limits[name]} {value:.3g} > {name} {limit:g}"
    return measured, None


def run_study(
    spec: TuneSpec,
    trials: int,
    out: str | Path,
    storage: str | None = None,
    study_name: str = "fashattr",
    baseline: bool = False,
) -> Any:
    """Run (or resume) the study until it holds ``trials`` finished trials; returns it.

    ``baseline``: a new study's first trial is the base config's own values of the searched keys
    (:func:`base_params`), so the table measures the search against the guess under the same
    conditions. Only the worker that creates the study queues it; a resumed study keeps its trials.
    """
    import optuna

    from fashattr.data.formats import create_reader
    from fashattr.engine.tracking import study_run
    from fashattr.engine.trainer import fit
    from fashattr.report.compare import load_run

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    pruner: optuna.pruners.BasePruner = {
        "median": optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        "hyperband": optuna.pruners.HyperbandPruner(),
        "none": optuna.pruners.NopPruner(),
    }[spec.pruner]
    first = base_params(spec) if baseline else None  # refused before any study is created
    study, seed, created = _open_study(
        optuna,
        spec.seed,
        study_name=study_name,
        storage=storage,
        direction="maximize" if spec.direction == "maximize" else "minimize",
        pruner=pruner,
    )
    log.info("study %s: this worker samples with TPE seed %d", study_name, seed)
    if first is not None and created:
        study.enqueue_trial(first, user_attrs={"baseline": True})
        log.info("first trial: the config's own values %s", first)
    elif first is not None:
        log.info("study %s already exists: --baseline queues nothing (the creator's trials stand)", study_name)
    base_cfg = config_from_dict(spec.base)
    schema = create_reader(base_cfg.data.format, base_cfg.data.root, base_cfg.data.reader_options).schema()
    parent = study_run(base_cfg, out, study_name)  # tracking: mlflow: the trials are nested runs under it

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("sampler_seed", seed)
        over = suggest(trial, spec.space)
        name = f"trial-{trial.number:04d}"
        cfg = config_from_dict(apply_overrides(spec.base, [*over, f"out_dir={out / 'trials'}", f"name={name}"]))
        measured, over_budget = check_constraints(cfg, spec.constraints, schema)
        for k, v in measured.items():
            trial.set_user_attr(k, round(v, 4))
        if over_budget:
            trial.set_user_attr("pruned_because", over_budget)
            raise optuna.TrialPruned(over_budget)

        def report(epoch: int, record: dict[str, float]) -> None:
            value = record[spec.metric]
            trial.report(value, epoch)
            if trial.should_prune():
                trial.set_user_attr("pruned_because", f"{spec.metric} {value:.4f} at epoch {epoch}")
                raise optuna.TrialPruned(f"epoch {epoch}")

        run = fit(cfg, on_epoch=report, tracking_parent=parent)
        trial.set_user_attr("run", str(run))
        history = [r[spec.metric] for r in load_run(run).history]
        best = max(history) if spec.direction == "maximize" else min(history)
        return float(best)

    def finished() -> int:
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
        return len(study.get_trials(deepcopy=False, states=done))

    while finished() < trials:
        # a diverging learning rate fails its trial (recorded) and the study goes on
        study.optimize(objective, n_trials=1, catch=(FloatingPointError,))
    if parent is not None:
        done = [t for t in study.trials if t.value is not None]
        if done:
            parent.log_metrics({"best_value": study.best_value, "trials": len(study.trials)}, len(study.trials))
            parent.set_tags({f"best.{k}": str(v) for k, v in study.best_params.items()})
    return study


def _open_study(optuna: Any, seed: int, attempts: int = 10, **kwargs: Any) -> tuple[Any, int, bool]:
    """Create the study, or join it where it exists; returns it, its TPE sampler's seed and whether
    this call created it.

    The worker that creates the study samples with ``seed`` (``tune.seed``), so a study that one
    worker runs from start to finish reproduces exactly. A worker that joins an existing study
    (a second worker, or an interrupted study resumed) gets ``joiner_seed(seed)``: with the
    creator's seed, TPE's random start-up draws would repeat the values already tried (two
    workers started together both drew lr 0.003538 first). Workers started together race to
    create the database tables or the study, and all but one lose that race once: retried.
    """
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(attempts):
        try:
            try:
                sampler = optuna.samplers.TPESampler(seed=seed)
                return optuna.create_study(sampler=sampler, load_if_exists=False, **kwargs), seed, True
            except optuna.exceptions.DuplicatedStudyError:
                joined = joiner_seed(seed)
                sampler = optuna.samplers.TPESampler(seed=joined)
                names = ("study_name", "storage", "pruner")
                return optuna.load_study(sampler=sampler, **{k: kwargs[k] for k in names}), joined, False
        except (IntegrityError, OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def joiner_seed(seed: int) -> int:
    """A sampler seed for a worker joining a study: ``seed`` mixed with 64 bits of
    ``os.urandom`` (numpy's ``SeedSequence``), a 32-bit value. Not the pid (containers and
    machines repeat pids), not the clock (workers started together read the same second) and
    not the study's trial count (workers started together see the same count)."""
    nonce = int.from_bytes(os.urandom(8), "little")
    return int(np.random.SeedSequence([seed, nonce]).generate_state(1)[0])


def trials_table(study: Any) -> str:
    """Every trial: number, state, value, parameters, measurements and why it was pruned."""
    keys = list(dict.fromkeys(k for t in study.trials for k in t.params))
    header = ["#", "state", "value", *keys, "params_m", "mb", "latency_ms", "seconds", "note"]
    rows = []
    for t in study.trials:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else math.nan
        rows.append(
            [
                str(t.number),
                t.state.name.lower(),
                "-" if t.value is None else f"{t.value:.4f}",
                *(_short(t.params.get(k)) for k in keys),
                *(_short(t.user_attrs.get(k)) for k in ("params_m", "mb", "latency_ms")),
                "-" if math.isnan(seconds) else f"{seconds:.0f}",
                t.user_attrs.get("pruned_because", "")
                or ("the config's own values" if t.user_attrs.get("baseline") else ""),
            ]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _short(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_best(study: Any, spec: TuneSpec, out: str | Path) -> Path:
    """The best trial's configuration as a runnable recipe (``best.yaml``)."""
    best = study.best_trial
    cfg = config_from_dict(apply_overrides(spec.base, as_overrides(best.params)))
    data = config_to_dict(replace(cfg, name=None, recipe=f"tuned: trial {best.number} of study {study.study_name}"))
    header = (
        f"# Best of {len(study.trials)} trials (trial {best.number}): {spec.metric} {best.value:.4f} on the\n"
        f"# model-selection split. Written by `fashattr tune`; train it with `fashattr train best.yaml`.\n"
    )
    path = Path(out) / "best.yaml"
    atomic_write_text(path, header + yaml.safe_dump(data, sort_keys=False))
    return path
