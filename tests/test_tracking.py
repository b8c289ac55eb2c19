"""Runs tracked in MLflow (``tracking: mlflow``), read back through MLflow's own client: against a real ``mlflow
server`` on loopback (.venv-mlflow, tools/mlflow-server.sh) and against the default local SQLite store."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Generator
from pathlib import Path

import pytest
from conftest import tiny_overrides
from pg_cluster import free_port
from serving import external_server, require_tool

from fashattr.config import ConfigError, load_config
from fashattr.engine.trainer import fit

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SERVER = Path(os.environ.get("FASHATTR_MLFLOW", ROOT / ".venv-mlflow" / "bin" / "mlflow"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Generator[str, None, None]:
    """A real MLflow tracking server on a free loopback port, its own SQLite store and artifact folder."""
    require_tool(SERVER, "MLflow server", "tools/mlflow-server.sh")
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    cmd = [str(SERVER), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
    cmd += ["--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with external_server([*cmd, "--workers", "1"], url + "/health", root / "server.log", cwd=root):
        yield url


def the_run(client: MlflowClient, name: str, experiment: str = "fashattr") -> mlflow.entities.Run:
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{name}'")
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        out |= artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return out


def test_a_run_logs_its_config_epochs_summary_files_and_bundle_to_a_server(
    server: str, tiny_data: Path, cache_dir: Path, tmp_path: Path
):
    over = tiny_overrides(tiny_data, cache_dir, tmp_path, name="tracked", **{"data.test_holdout": 0.2})
    run = fit(load_config(None, [*over, "tracking=mlflow", f"tracking_uri={server}", "tracking_experiment=tests"]))
    client = MlflowClient(server)
    got = the_run(client, "tracked", "tests")
    assert got.info.status == "FINISHED"
    assert json.loads((run / "tracking.json").read_text())["run_id"] == got.info.run_id
    # Parameters: every key of the resolved config, as the run folder's config.yaml holds it.
    params = got.data.params
    assert params["train.epochs"] == "2" and params["model.backbone"] == "test_resnet"
    assert params["data.root"] == str(tiny_data.resolve()) and params["tracking"] == "mlflow"
    assert json.loads(params["augment.scale"]) == [1.0, 1.0]
    # Metrics: one point per epoch for each column of metrics.csv; the summary under best/ and test_holdout/.
    summary = json.loads((run / "summary.json").read_text())
    history = client.get_metric_history(got.info.run_id, "avg_class_acc")
    assert [m.step for m in history] == [1, 2]
    rows = (run / "metrics.csv").read_text().splitlines()
    header, values = rows[0].split(","), [r.split(",") for r in rows[1:]]
    column = header.index("avg_class_acc")
    assert [m.value for m in history] == pytest.approx([float(v[column]) for v in values])
    assert got.data.metrics["test_holdout/avg_class_acc"] == pytest.approx(summary["test_holdout"]["avg_class_acc"])
    assert got.data.metrics["best/overall_acc"] == pytest.approx(summary["best"]["overall_acc"])
    # Artifacts: the run's files and a bundle of its best weights.
    files = artifacts(client, got.info.run_id)
    assert {"config.yaml", "schema.yaml", "metrics.csv", "summary.json", "train.log"} <= files
    assert {"bundle/config.json", "bundle/model.safetensors", "bundle/hashes.json", "bundle/README.md"} <= files


def test_report_is_added_to_the_tracked_run(server: str, tiny_data: Path, cache_dir: Path, tmp_path: Path):
    from fashattr.cli import main

    over = tiny_overrides(tiny_data, cache_dir, tmp_path, name="reported", **{"train.epochs": 1})
    run = fit(load_config(None, [*over, "tracking=mlflow", f"tracking_uri={server}"]))
    assert main(["report", str(run), "--out", str(tmp_path / "report"), "--gradcam", "0", "--resamples", "50"]) == 0
    client = MlflowClient(server)
    files = artifacts(client, the_run(client, "reported").info.run_id)
    assert "report/report.html" in files and "report/report.json" in files


def test_unreachable_server_stops_the_run_before_it_trains(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    over = tiny_overrides(tiny_data, cache_dir, tmp_path, name="lost")
    started = time.monotonic()
    with pytest.raises(ConfigError, match=rf"tracking_uri {url}: the MLflow tracking server does not answer"):
        fit(load_config(None, [*over, "tracking=mlflow", f"tracking_uri={url}"]))
    assert time.monotonic() - started < 30  # no minutes of retries
    assert not (tmp_path / "lost" / "best.safetensors").exists()
    assert "does not answer" in (tmp_path / "lost" / "train.log").read_text()


def test_default_store_is_sqlite_beside_the_runs_and_a_resumed_run_logs_on(
    tiny_data: Path, cache_dir: Path, tmp_path: Path
):
    """No tracking_uri: OUT_DIR/mlflow.db. A run killed after its first epoch and resumed is one MLflow run."""
    over = tiny_overrides(tiny_data, cache_dir, tmp_path, name="local", **{"train.epochs": 2})

    def stop_after_first(epoch: int, record: dict[str, float]) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(load_config(None, [*over, "tracking=mlflow"]), on_epoch=stop_after_first)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert the_run(client, "local").info.status == "KILLED"
    fit(resume=tmp_path / "local")
    got = the_run(client, "local")
    assert got.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(got.info.run_id, "train_loss")] == [1, 2]
    assert (tmp_path / "mlartifacts").is_dir() and "bundle/model.safetensors" in artifacts(client, got.info.run_id)


def test_tune_trials_are_nested_under_the_study(server: str, tiny_data: Path, cache_dir: Path, tmp_path: Path):
    import yaml

    from fashattr.config import config_to_dict
    from fashattr.tune import load_spec, run_study

    over = tiny_overrides(tiny_data, cache_dir, tmp_path, **{"train.epochs": 1})
    base = load_config(None, [*over, "tracking=mlflow", f"tracking_uri={server}", "tracking_experiment=study"])
    spec_file = tmp_path / "tune.yaml"
    spec = {
        **config_to_dict(base),
        "tune": {
            "metric": "avg_class_acc",
            "pruner": "none",
            "space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
        },
    }
    spec_file.write_text(yaml.safe_dump(spec))
    run_study(load_spec(spec_file), trials=2, out=tmp_path / "study", study_name="lr-study")
    client = MlflowClient(server)
    parent = the_run(client, "lr-study", "study")
    exp = client.get_experiment_by_name("study")
    assert exp is not None
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(r.info.run_name for r in children) == ["trial-0000", "trial-0001"]
    assert all("optim.lr" in r.data.params for r in children)
    assert parent.data.metrics["trials"] == 2 and "best.optim.lr" in parent.data.tags
