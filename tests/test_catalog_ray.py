"""The Ray engine (local Ray, 2 CPUs) against PostgreSQL: the same rows as the local engine, exactly once,
also when a model actor is killed mid-run."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from catalog_fixtures import check_exactly_once, make_photos, shared_bundle, table_counts

from fashattr.catalog import db
from fashattr.catalog.tag import tag

N = 40


def rows(url: str) -> dict[tuple[str, str], tuple[str, float]]:
    engine = db.create_db_engine(url)
    with engine.connect() as conn:
        p = db.predictions
        got = conn.execute(sa.select(p.c.sha256, p.c.group_name, p.c.class_name, p.c.probability)).all()
    engine.dispose()
    return {(s, g): (c, pr) for s, g, c, pr in got}


def kill_one_actor(url: str, killed: list[int]) -> None:
    """Once the run has committed something, SIGKILL one model actor process."""
    import psutil

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            started = table_counts(url)["predictions"] > 0
        except Exception:
            started = False
        if started:
            for proc in psutil.process_iter(["pid", "cmdline"]):
                if "MapBatches(Tagger)" in " ".join(proc.info["cmdline"] or []):
                    proc.kill()
                    killed.append(proc.info["pid"])
                    return
        time.sleep(0.02)


def test_ray_engine_gives_the_local_rows_exactly_once_with_a_killed_worker(
    pg_cluster: object, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ray = pytest.importorskip("ray")
    from fashattr.catalog.engines import init_ray

    bundle = shared_bundle(tmp_path_factory)
    photos = make_photos(tmp_path / "photos", N)
    local_url = pg_cluster.create_database("ray_local")  # type: ignore[attr-defined]
    ray_url = pg_cluster.create_database("ray_ray")  # type: ignore[attr-defined]
    local = tag(bundle, [photos], local_url, backend="onnx", batch_size=4, progress=False)
    init_ray(None, num_cpus=2)
    try:
        killed: list[int] = []
        killer = threading.Thread(target=kill_one_actor, args=(ray_url, killed), daemon=True)
        killer.start()
        s = tag(bundle, [photos], ray_url, backend="onnx", batch_size=4, workers=2, engine="ray", progress=False)
        killer.join(timeout=5)
        assert killed, "no model actor was found to kill"
        assert (s.tagged, s.duplicates, sum(s.errors.values())) == (local.tagged, 1, 2) == (N, 1, 2)
        again = tag(bundle, [photos], ray_url, backend="onnx", engine="ray", progress=False)
        assert (again.tagged, again.skipped_done) == (0, N + 3)
    finally:
        ray.shutdown()
    assert check_exactly_once(ray_url, s.model_id) == (N, 2)
    assert table_counts(ray_url) == table_counts(local_url)
    a, b = rows(local_url), rows(ray_url)
    assert a.keys() == b.keys()
    assert all(a[k][0] == b[k][0] and abs(a[k][1] - b[k][1]) < 1e-5 for k in a)
