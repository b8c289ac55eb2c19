"""One bundle, one answer (issue 31): predict, serve and tag run a bundle on the same backend by one rule
(deploy.runtime.resolve_backend) and give the same labels for the same real photos; a server whose model cannot
load exits with the reason instead of answering 503 for ever."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import untrained_run
from pg_cluster import free_port
from serving import serving

from fashattr.catalog.search import search
from fashattr.catalog.tag import materialize
from fashattr.deploy.bundle import write_bundle
from fashattr.deploy.runtime import is_run_folder, resolve_backend

pytest.importorskip("fastapi")
pytest.importorskip("onnxruntime")


def fashattr(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fashattr", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("bundles")
    run = untrained_run(None, out, size=48)
    return {
        "run": run,
        "all": write_bundle(run, out / "all", formats=("onnx", "onnx-int8")),  # safetensors + fp32 + int8 ONNX
        "plain": write_bundle(run, out / "plain", formats=("bundle",)),  # safetensors only
    }


def test_one_backend_rule(bundles: dict[str, Path]):
    assert is_run_folder(bundles["run"]) and not is_run_folder(bundles["all"])
    assert resolve_backend(bundles["all"]) == "onnx"  # fp32 ONNX, never int8 unasked
    assert resolve_backend(bundles["plain"]) == "torch"
    assert resolve_backend(bundles["run"]) == "torch"
    assert resolve_backend(bundles["all"], "onnx-int8") == "onnx-int8"  # asked for: kept
    assert materialize(bundles["all"])[2] == "onnx"  # tag's rule is the same rule
    with pytest.raises(ValueError, match=r"unknown backend 'tensorrt'"):
        resolve_backend(bundles["all"], "tensorrt")


@pytest.mark.realdata
def test_predict_serve_and_tag_give_the_same_labels(bundles: dict[str, Path], real_data: Path, tmp_path: Path):
    import sqlalchemy as sa

    from fashattr.catalog import db

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(10):
        shutil.copy(real_data / "img" / f"{i:05d}.jpg", photos)
    bundle = bundles["all"]
    done = fashattr("predict", str(bundle), str(photos), "--out", "p.jsonl", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    predicted, unsure = {}, {}
    for line in (tmp_path / "p.jsonl").read_text().splitlines():
        rec = json.loads(line)
        predicted[Path(rec["path"]).name] = {g: v["class"] for g, v in rec["groups"].items()}
        unsure[Path(rec["path"]).name] = {g: v["unsure"] for g, v in rec["groups"].items()}
    assert len(predicted) == 10
    with serving(bundle) as url:
        ready = httpx.get(url + "/readyz").json()
        assert ready["backend"] == "onnx"
        files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in sorted(photos.iterdir())]
        body = httpx.post(url + "/v1/predict", files=files, timeout=60).json()
    served = {r["file"]: {g: v["class"] for g, v in r["groups"].items()} for r in body["results"]}
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    done = fashattr("tag", str(bundle), str(photos), "--db", url, "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    engine = db.open_db(url)
    p = db.predictions
    with engine.connect() as conn:
        q = sa.select(db.image_paths.c.path, p.c.group_name, p.c.class_name, p.c.unsure).join(
            p, p.c.sha256 == db.image_paths.c.sha256
        )
        tagged: dict[str, dict[str, str]] = {}
        stored: dict[str, dict[str, bool]] = {}
        for path, group, name, flag in conn.execute(q):
            tagged.setdefault(Path(path).name, {})[group] = name
            stored.setdefault(Path(path).name, {})[group] = flag
    assert predicted == served == tagged
    assert stored == unsure  # the catalog keeps the flag predict shows
    # An untrained model's answers (about 1 / classes) are all unsure: `search --sure` leaves them out.
    first = next(iter(tagged.values()))["sleeve"]
    assert all(all(v.values()) for v in unsure.values())
    assert search(engine, [f"sleeve={first}"]).matches
    assert search(engine, [f"sleeve={first}"], sure=True).matches == []
    engine.dispose()


def test_serve_a_bundle_without_onnx_and_refuse_a_missing_file(bundles: dict[str, Path], tmp_path: Path):
    with serving(bundles["plain"]) as url:  # `export --format bundle` then `serve`: torch, ready
        assert httpx.get(url + "/readyz").json()["backend"] == "torch"
    done = fashattr("serve", str(bundles["plain"]), "--backend", "onnx", "--port", str(free_port()), cwd=tmp_path)
    assert done.returncode == 2
    assert "model.onnx: not in this bundle: serve it with --backend torch (or auto)" in done.stderr


def test_serve_exits_when_the_model_cannot_load(bundles: dict[str, Path], tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(bundles["run"], run)
    (run / "best.safetensors").write_bytes(b"not weights")  # found at start, fails when loaded
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "fashattr", "serve", str(run), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error: the model could not be loaded, so the server stopped:" in done.stderr
    assert time.monotonic() - start < 120
