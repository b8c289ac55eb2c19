"""fashattr tag: every image once per model, duplicates inferred once, bad images recorded, re-runs and
moves recognised by content, sources (folders, CSV, Parquet), the same rows as predict."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from catalog_fixtures import BAD, N_GOOD, check_exactly_once, make_bundle, make_photos, shared_bundle, table_counts
from PIL import Image

from fashattr.catalog import db
from fashattr.catalog.sources import SourceError, iter_sources
from fashattr.catalog.tag import tag
from fashattr.deploy.bundle import bundle_hash
from fashattr.deploy.runtime import Runtime


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_bundle(tmp_path_factory)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    return make_photos(tmp_path / "photos")


def test_tag_a_folder_then_rerun_move_and_new_model(bundle: Path, photos: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    s = tag(bundle, [photos], url, backend="onnx", batch_size=8, progress=False)
    mid = bundle_hash(bundle)
    assert (s.model_id, s.tagged, s.duplicates, s.skipped_done) == (mid, N_GOOD, 1, 0)
    assert s.first_result_s is not None and 0 < s.first_result_s < s.seconds  # 5 batches: the first before the end
    assert dict(s.errors) == {BAD["bad/not_an_image.jpg"]: 1, BAD["bad/truncated.jpg"] + ": Truncated File Read": 1}
    # 40 photos + 2 bad contents; 43 paths (the copy is a second path of one content); 6 groups each.
    assert table_counts(url) == {"images": 42, "image_paths": 43, "predictions": 6 * N_GOOD, "errors": 2}
    assert check_exactly_once(url, mid) == (N_GOOD, 2)
    engine = db.open_db(url)
    with engine.connect() as conn:
        e = db.embeddings
        dims = conn.execute(sa.select(e.c.dim, sa.func.length(e.c.vector))).all()
        assert len(dims) == N_GOOD and {(d, n) for d, n in dims} == {(dims[0][0], 4 * dims[0][0])}
        reasons = dict(conn.execute(sa.select(db.errors.c.path, db.errors.c.reason)).all())
        assert reasons[str(photos / "bad/not_an_image.jpg")] == BAD["bad/not_an_image.jpg"]
        assert reasons[str(photos / "bad/truncated.jpg")].startswith(BAD["bad/truncated.jpg"])
        w, h = conn.execute(sa.select(db.images.c.width, db.images.c.height).where(db.images.c.width == 41)).first()
        assert (w, h) == (41, 48)

    # A re-run: nothing to infer; a moved file is recognised by its content (a new path, no new tagging).
    shutil.move(photos / "a" / "0001.jpg", photos / "moved.jpg")
    s = tag(bundle, [photos], url, backend="onnx", batch_size=8, progress=False)
    assert (s.tagged, s.skipped_done, s.duplicates, sum(s.errors.values())) == (0, 43, 0, 0)
    assert s.first_result_s is None  # nothing was tagged
    counts = table_counts(url)
    assert counts == {"images": 42, "image_paths": 44, "predictions": 6 * N_GOOD, "errors": 2}

    # Another bundle is another model: everything is tagged again under its own id.
    other = make_bundle(tmp_path / "other", seed=1, formats=("bundle",))
    s = tag(other, [photos], url, backend="torch", batch_size=16, progress=False)
    assert s.model_id != mid and s.tagged == N_GOOD
    assert check_exactly_once(url, s.model_id) == (N_GOOD, 2)
    assert table_counts(url)["predictions"] == 12 * N_GOOD
    engine.dispose()


def test_rows_equal_the_runtimes_predictions(bundle: Path, photos: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    tag(bundle, [photos / "a"], url, backend="onnx", batch_size=5, workers=3, progress=False)
    rt = Runtime.from_bundle(bundle, "onnx")
    files = sorted((photos / "a").glob("*.jpg"))
    expected = {r["path"]: r["groups"] for r in rt.predict_files(files)}
    engine = db.open_db(url)
    with engine.connect() as conn:
        q = sa.select(db.image_paths.c.path, db.predictions).join(
            db.predictions, db.predictions.c.sha256 == db.image_paths.c.sha256
        )
        rows = conn.execute(q).mappings().all()
    engine.dispose()
    assert len(rows) == 6 * len(files)
    for r in rows:
        want = expected[r["path"]][r["group_name"]]
        assert (r["class_name"], r["class_index"]) == (want["class"], want["index"])
        assert r["probability"] == pytest.approx(want["prob"], abs=1e-6)
        assert r["top_k"][0]["class"] == want["class"]
        assert [t["prob"] for t in r["top_k"]] == sorted((t["prob"] for t in r["top_k"]), reverse=True)


def test_csv_and_parquet_lists(bundle: Path, photos: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rel = ["a/0001.jpg", "a/0003.jpg"]
    (photos / "list.csv").write_text("path,sku\n" + "".join(f"{p},x{i}\n" for i, p in enumerate(rel)))
    pq.write_table(
        pa.table({"path": [str(photos / "b" / "0000.jpg"), str(photos / "copy_of_0000.jpg")]}),
        tmp_path / "list.parquet",
    )
    assert list(iter_sources([photos / "a" / ".." / "b" / "0000.jpg"])) == [photos / "b" / "0000.jpg"]
    got = list(iter_sources([photos / "list.csv", tmp_path / "list.parquet"]))
    assert got == [photos / rel[0], photos / rel[1], photos / "b" / "0000.jpg", photos / "copy_of_0000.jpg"]
    s = tag(
        bundle,
        [photos / "list.csv", tmp_path / "list.parquet"],
        f"sqlite:///{tmp_path / 'c.db'}",
        backend="onnx",
        progress=False,
    )
    assert (s.tagged, s.duplicates) == (3, 1)


def test_bad_sources_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "urls.csv").write_text("path\nok.jpg\nhttps://shop.example/1.jpg\n")
    with pytest.raises(SourceError, match=r"urls.csv:3: 'https://shop.example/1.jpg' is a URL"):
        list(iter_sources([tmp_path / "urls.csv"]))
    (tmp_path / "nocol.csv").write_text("file\nx.jpg\n")
    with pytest.raises(SourceError, match=r"nocol.csv:1: no 'path' column"):
        list(iter_sources([tmp_path / "nocol.csv"]))
    with pytest.raises(SourceError, match="is a URL"):
        list(iter_sources(["s3://bucket/photos"]))
    with pytest.raises(SourceError, match="no such file or folder"):
        list(iter_sources([tmp_path / "missing"]))


def test_cli_exit_codes(bundle: Path, photos: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    cmd = [sys.executable, "-m", "fashattr", "tag", str(bundle), str(photos / "bad"), "--db", url, "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr  # bad images are not fatal
    assert "0 tagged, 0 skipped as done, 0 duplicate(s), 2 error(s)" in done.stdout
    done = subprocess.run([*cmd[:5], str(tmp_path / "nope"), *cmd[6:]], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "nope: no such file or folder" in done.stderr
    nodb = [*cmd[:7], "postgresql+psycopg://nobody@127.0.0.1:1/none", *cmd[8:]]
    done = subprocess.run(nodb, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "error: database postgresql+psycopg://nobody@127.0.0.1:1/none:" in done.stderr
    assert "Traceback" not in done.stderr


def test_prediction_rows_single_and_multi_label() -> None:
    from fashattr.catalog.batch import prediction_rows

    record = {
        "groups": {
            "sleeve": {
                "class": "long",
                "index": 0,
                "prob": 0.7,
                "top": [{"class": "long", "index": 0, "prob": 0.7}, {"class": "short", "index": 1, "prob": 0.2}],
            },
            "tags": [{"class": "floral", "index": 2, "prob": 0.9}, {"class": "lace", "index": 0, "prob": 0.6}],
            "none": [],
        },
        "decoding": "balanced",
    }
    rows = {r["group_name"]: r for r in prediction_rows("s" * 64, "m" * 64, record, "now")}
    assert (rows["sleeve"]["class_name"], rows["sleeve"]["class_index"], rows["sleeve"]["probability"]) == (
        "long",
        0,
        0.7,
    )
    assert [t["class"] for t in rows["sleeve"]["top_k"]] == ["long", "short"]
    assert (rows["tags"]["class_name"], rows["tags"]["class_index"], rows["tags"]["probability"]) == (
        "floral|lace",
        -1,
        0.9,
    )
    assert (rows["none"]["class_name"], rows["none"]["probability"], rows["none"]["top_k"]) == ("", 0.0, [])
    assert {r["decoding"] for r in rows.values()} == {"balanced"}


def test_memory_stays_bounded_for_many_files(bundle: Path, tmp_path: Path) -> None:
    from fashattr.catalog.batch import HASH_CHUNK

    rng = np.random.default_rng(0)
    for i in range(700):  # tiny distinct photos: the bound, not the pixels, is under test
        p = tmp_path / "many" / f"{i // 100}" / f"{i:04d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(p)
    s = tag(bundle, [tmp_path / "many"], f"sqlite:///{tmp_path / 'c.db'}", backend="onnx", batch_size=4, progress=False)
    assert s.tagged == 700
    # A chunk of hashes plus the batches decoding, at the model and being written: not the whole catalog.
    assert 0 < s.peak_in_flight <= HASH_CHUNK + 6 * 4


def test_a_run_folder_is_tagged_under_its_bundles_id(bundle: Path, photos: Path, tmp_path: Path) -> None:
    from fashattr.deploy.bundle import write_bundle

    run = bundle.parent / "run0"  # the run folder the shared bundle was exported from
    s = tag(run, [photos / "a"], f"sqlite:///{tmp_path / 'c.db'}", backend="torch", progress=False)
    assert s.model_id == bundle_hash(write_bundle(run, tmp_path / "exported"))  # `fashattr export RUN`'s id
    assert s.tagged == N_GOOD // 2
