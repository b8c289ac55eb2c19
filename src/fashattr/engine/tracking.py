"""Runs tracked in MLflow (``tracking: mlflow``): the resolved config as parameters, every epoch's metrics, the
summary, and the run's files and its bundle as artifacts, under the fashattr run's name.

The run folder stays the record: fashattr reads nothing back from MLflow. ``tracking.json`` in the run folder keeps
the MLflow run's id, so a resumed run logs on into the same MLflow run, and ``fashattr report`` adds its report to
it. Only the main process of a distributed run logs. Where the tracking server cannot be reached the run stops
before it trains (a run whose curves went nowhere would only be found out at its end), naming the URI.

Where the runs go: ``tracking_uri`` (a server, ``http://host:5000``, or a database URI); by default a SQLite
store beside the run folders, ``OUT_DIR/mlflow.db``, with artifacts in ``OUT_DIR/mlartifacts`` (read it with
``mlflow ui --backend-store-uri sqlite:///OUT_DIR/mlflow.db``). The client is MLflow's own (``pip install
'fashattr[mlflow]'``: mlflow-skinny, and alembic for the SQLite store).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import fashattr
from fashattr.config import Config, ConfigError, config_to_dict
from fashattr.fileio import atomic_write_text

log = logging.getLogger("fashattr")

TRACKING_FILE = "tracking.json"
RUN_FILES = ("config.yaml", "schema.yaml", "metrics.csv", "summary.json", "train.log", "calibration.json")
BATCH = 100  # MLflow's limit of parameters per log_batch call


def default_uri(out_dir: Path) -> str:
    """The SQLite store beside the run folders."""
    return f"sqlite:///{(out_dir / 'mlflow.db').resolve()}"


def flat_params(cfg: Config) -> dict[str, str]:
    """The resolved config as ``section.key`` -> value text (lists and mappings as JSON), every key."""
    out: dict[str, str] = {}
    for section, values in config_to_dict(cfg).items():
        if isinstance(values, dict):
            for key, value in values.items():
                out[f"{section}.{key}"] = value if isinstance(value, str) else json.dumps(value)
        else:
            out[section] = values if isinstance(values, str) else json.dumps(values)
    return out


def _client(uri: str) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError("tracking: mlflow needs MLflow's client: pip install 'fashattr[mlflow]'") from None
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    return MlflowClient(uri)


def _check_server(uri: str, timeout: float = 5.0) -> None:
    """Fail at once, naming the URI, where the server does not answer (MLflow's client retries for minutes)."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as r:
            if r.status != 200:
                raise OSError(f"HTTP {r.status}")
    except (OSError, urllib.error.URLError) as e:
        raise ConfigError(
            f"tracking_uri {uri}: the MLflow tracking server does not answer ({e}); start it (`mlflow server`), "
            "point tracking_uri at it, or set tracking=none"
        ) from None


class Tracker:
    """One fashattr run's MLflow run."""

    def __init__(self, client: Any, run_id: str, uri: str) -> None:
        self.client, self.run_id, self.uri = client, run_id, uri
        self.lost: str | None = None  # why logging stopped mid-run (the run goes on; the log says so once)

    def _during_run(self, what: str, call: Any, *args: Any, **kwargs: Any) -> None:
        """``call(*args)``, where a failure after the start (a server gone away) must not end a training run:
        it is logged once as a warning, and the tracker stops logging."""
        if self.lost is not None:
            return
        try:
            call(*args, **kwargs)
        except Exception as e:  # MLflow raises its own exceptions and requests' for a lost server
            self.lost = f"{what}: {e}"
            log.warning("tracking: MLflow run %s at %s stopped logging (%s); the run goes on", self.run_id, self.uri, e)

    @classmethod
    def start(cls, cfg: Config, run_dir: Path, parent: Tracker | None = None) -> Tracker | None:
        """The MLflow run of ``run_dir`` (None for ``tracking: none``): the one ``tracking.json`` names when the run
        is resumed, else a new one named after the run folder, with the config as parameters; ``parent``: the
        study whose trial this is (a nested run in the study's store).

        Raises:
            ConfigError: MLflow is not installed, or the tracking server does not answer.
        """
        if cfg.tracking == "none":
            return None
        uri = parent.uri if parent is not None else cfg.tracking_uri or default_uri(run_dir.parent)
        client = _client(uri)
        recorded = run_dir / TRACKING_FILE
        if recorded.is_file():
            run_id = json.loads(recorded.read_text())["run_id"]
            client.update_run(run_id, status="RUNNING")
            log.info("tracking: resumed MLflow run %s at %s", run_id, uri)
            return cls(client, run_id, uri)
        experiment = cls._experiment(client, cfg.tracking_experiment, uri, run_dir.parent)
        tags = {"fashattr.run_dir": str(run_dir.resolve()), "fashattr.version": fashattr.__version__}
        if cfg.recipe:
            tags["fashattr.recipe"] = cfg.recipe
        if parent is not None:
            tags["mlflow.parentRunId"] = parent.run_id
        run = client.create_run(experiment, run_name=run_dir.name, tags=tags)
        tracker = cls(client, run.info.run_id, uri)
        tracker.log_params(flat_params(cfg))
        record = {"uri": uri, "experiment": cfg.tracking_experiment, "run_id": tracker.run_id}
        atomic_write_text(recorded, json.dumps(record, indent=1) + "\n")
        log.info("tracking: MLflow run %s (experiment %s) at %s", tracker.run_id, cfg.tracking_experiment, uri)
        return tracker

    @classmethod
    def attach(cls, run_dir: Path) -> Tracker | None:
        """The MLflow run a tracked run folder logged to (None for an untracked run)."""
        recorded = run_dir / TRACKING_FILE
        if not recorded.is_file():
            return None
        info = json.loads(recorded.read_text())
        return cls(_client(info["uri"]), info["run_id"], info["uri"])

    @staticmethod
    def _experiment(client: Any, name: str, uri: str, out_dir: Path) -> str:
        found = client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        # A local store keeps its artifacts beside it; a server decides where its artifacts go.
        location = None if uri.startswith(("http://", "https://")) else (out_dir / "mlartifacts").resolve().as_uri()
        return str(client.create_experiment(name, artifact_location=location))

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in sorted(params.items())]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + BATCH])

    def set_tags(self, tags: dict[str, str]) -> None:
        """Tags (unlike parameters, MLflow lets a tag change: a resumed study's best trial)."""
        for k, v in tags.items():
            self._during_run("tags", self.client.set_tag, self.run_id, k, v)

    def log_metrics(self, values: dict[str, Any], step: int, prefix: str = "") -> None:
        """The finite numbers of ``values`` as metrics at ``step`` (a NaN point draws nothing)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(prefix + k, float(v), now, step)
            for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ]
        for i in range(0, len(items), BATCH):
            self._during_run("metrics", self.client.log_batch, self.run_id, metrics=items[i : i + BATCH])

    def log_files(self, folder: Path, names: tuple[str, ...] = RUN_FILES, path: str | None = None) -> None:
        for name in names:
            if (folder / name).is_file():
                self._during_run("artifacts", self.client.log_artifact, self.run_id, str(folder / name), path)

    def finish(self, run_dir: Path, summary: dict[str, Any]) -> None:
        """The summary's metrics (``best/...``, ``test_holdout/...``), the run's files, and its bundle."""
        from fashattr.deploy.bundle import write_bundle

        step = int(summary.get("best_epoch") or 0)
        self.log_metrics(summary.get("best") or {}, step, "best/")
        self.log_metrics(summary.get("test_holdout") or {}, step, "test_holdout/")
        self.log_metrics({"wall_s": summary.get("wall_s")}, step)
        self.log_files(run_dir)
        if (run_dir / "best.safetensors").is_file():
            with tempfile.TemporaryDirectory(prefix="fashattr-track-") as tmp:
                bundle = write_bundle(run_dir, Path(tmp) / "bundle")
                self._during_run("artifacts", self.client.log_artifacts, self.run_id, str(bundle), "bundle")
        self.end("FINISHED")

    def log_folder(self, folder: Path, path: str) -> None:
        """A folder (``fashattr report``'s) as artifacts under ``path``."""
        self.client.log_artifacts(self.run_id, str(folder), path)

    def end(self, status: str) -> None:
        """Close the MLflow run with ``status`` (FINISHED, FAILED, KILLED)."""
        self._during_run("end", self.client.set_terminated, self.run_id, status)


def study_run(cfg: Config, out: Path, name: str) -> Tracker | None:
    """The parent MLflow run of a tune study (its trials are nested under it); reused when the study resumes."""
    if cfg.tracking == "none":
        return None
    out.mkdir(parents=True, exist_ok=True)
    uri = cfg.tracking_uri or default_uri(out)
    client = _client(uri)
    recorded = out / TRACKING_FILE
    if recorded.is_file():
        info = json.loads(recorded.read_text())
        return Tracker(client, info["run_id"], uri)
    experiment = Tracker._experiment(client, cfg.tracking_experiment, uri, out)
    run = client.create_run(experiment, run_name=name, tags={"fashattr.study": str(out.resolve())})
    atomic_write_text(recorded, json.dumps({"uri": uri, "run_id": run.info.run_id}, indent=1) + "\n")
    return Tracker(client, run.info.run_id, uri)
