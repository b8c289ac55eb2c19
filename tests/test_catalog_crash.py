"""Crash safety: ``kill -9`` of ``fashattr tag`` at random moments while it commits, then the same command
again: every image exactly once, no partial batch, no duplicate row; on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from catalog_fixtures import check_exactly_once, make_photos, shared_bundle, table_counts

from fashattr.deploy.bundle import bundle_hash

# Distinct photos (plus one copy and two bad files): a Zen 5 core tagged 100 of these 48-px photos so fast
# that only one of three kills landed inside a run.
N = 1000
KILLS = 3


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    return str(request.getfixturevalue("pg_cluster").create_database("crash"))


def predictions_now(url: str) -> int:
    try:
        return table_counts(url)["predictions"]
    except Exception:  # the tables may not exist yet: the tagger creates them
        return 0


def test_kill_9_at_random_moments_then_rerun_tags_every_image_exactly_once(
    url: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    bundle = shared_bundle(tmp_path_factory)
    photos = make_photos(tmp_path / "photos", N)
    # Small batches, one decode thread: many commits, so each kill lands between or inside some.
    cmd = [sys.executable, "-m", "fashattr", "tag", str(bundle), str(photos), "--db", url]
    cmd += ["--backend", "onnx", "--batch-size", "2", "--workers", "1", "--threads", "1", "--no-progress"]
    rng = random.Random(13)
    killed = 0
    for _ in range(KILLS):
        before = predictions_now(url)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        # Wait until this run has committed something, then kill it a random moment later.
        while proc.poll() is None and predictions_now(url) <= before and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.1))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.communicate(timeout=30)
        check_exactly_once(url, bundle_hash(bundle))  # consistent after every kill, not only at the end
    assert killed >= 2, "the tagger finished before it could be killed: make the run longer"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    tagged, errors = check_exactly_once(url, bundle_hash(bundle))
    assert (tagged, errors) == (N, 2)
    assert table_counts(url) == {"images": N + 2, "image_paths": N + 3, "predictions": 6 * N, "errors": 2}
    assert f"{N} tagged" not in done.stdout  # the killed runs did part of the work
