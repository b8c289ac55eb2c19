"""The catalog database: tables, migrations, SQLite settings, upserts; on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from fashattr.catalog import db


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    cluster = request.getfixturevalue("pg_cluster")
    return str(cluster.create_database("dbtest"))


def test_open_creates_every_table_and_is_idempotent(url: str) -> None:
    engine = db.open_db(url)
    names = set(sa.inspect(engine).get_table_names())
    tables = {"schema_version", "images", "image_paths", "models", "predictions", "embeddings", "errors"}
    assert tables | {"wardrobe_items"} <= names
    indexes = {ix["name"]: ix["column_names"] for ix in sa.inspect(engine).get_indexes("predictions")}
    assert indexes["ix_predictions_attr"] == ["model_id", "group_name", "class_name", "probability"]
    engine.dispose()
    engine = db.open_db(url)  # a second open applies nothing
    with engine.connect() as conn:
        assert db.current_version(conn) == db.SCHEMA_VERSION == 3
        assert db.count_rows(conn, db.schema_version) == 3
    engine.dispose()


def test_later_migrations_run_once_in_order_and_newer_db_is_refused(url: str) -> None:
    engine = db.open_db(url)
    ran: list[int] = []

    def v4(conn: sa.Connection) -> None:
        ran.append(4)
        conn.execute(sa.text("ALTER TABLE images ADD COLUMN phash VARCHAR(16)"))

    later = [*db.MIGRATIONS, (4, v4)]
    with engine.begin() as conn:
        assert db.migrate(conn, later) == [4]
    with engine.begin() as conn:
        assert db.migrate(conn, later) == []
        assert "phash" in {c["name"] for c in sa.inspect(conn).get_columns("images")}
    assert ran == [4]
    with pytest.raises(RuntimeError, match="schema version 4 is newer than this fashattr's \\(3\\)"):
        db.open_db(url)
    engine.dispose()


def test_a_schema_1_catalog_gains_the_unsure_column(url: str) -> None:
    # A catalog as schema 1 left it: predictions without `unsure`, version 1 recorded.
    engine = db.open_db(url)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE predictions DROP COLUMN unsure"))
        conn.execute(sa.delete(db.schema_version).where(db.schema_version.c.version >= 2))
        conn.execute(sa.text("DROP TABLE wardrobe_items"))
    engine.dispose()
    engine = db.open_db(url)  # migrates: schema 2 adds the column, schema 3 the wardrobe
    with engine.connect() as conn:
        assert db.current_version(conn) == 3
        assert "wardrobe_items" in sa.inspect(conn).get_table_names()
        assert "unsure" in {c["name"] for c in sa.inspect(conn).get_columns("predictions")}
    engine.dispose()


def test_upserts_and_done_keys(url: str) -> None:
    engine = db.open_db(url)
    mid, a, b = "m" * 64, "a" * 64, "b" * 64
    t0 = db.now()
    with engine.begin() as conn:
        db.register_model(conn, mid, {"schema": {"groups": []}, "metrics": {"acc": 0.5}})
        db.register_model(conn, mid, {"schema": {"groups": []}})  # second time: kept as it was
        row = {"sha256": a, "bytes": 10, "width": 4, "height": 5, "first_seen": t0, "last_seen": t0}
        db.touch(conn, db.images, [row, {**row, "sha256": b}], ["sha256"])
        t1 = db.now()
        db.touch(conn, db.images, [{**row, "width": 99, "first_seen": t1, "last_seen": t1}], ["sha256"])
        pred = {"sha256": a, "model_id": mid, "group_name": "g", "class_name": "c", "class_index": 0}
        pred |= {"probability": 0.9, "top_k": [{"class": "c", "index": 0, "prob": 0.9}], "created": t1}
        db.insert_ignore(conn, db.predictions, [pred])
        db.insert_ignore(conn, db.predictions, [{**pred, "probability": 0.1}])
        err = {"sha256": b, "path": "/x/b.jpg", "model_id": mid, "reason": "bad", "seen": t1}
        db.insert_ignore(conn, db.errors, [err])
        db.insert_ignore(conn, db.errors, [err])
    with engine.connect() as conn:
        got = conn.execute(sa.select(db.images).where(db.images.c.sha256 == a)).one()
        assert (got.width, got.first_seen.timestamp(), got.last_seen.timestamp()) == (4, t0.timestamp(), t1.timestamp())
        assert conn.execute(sa.select(db.predictions.c.probability)).scalars().all() == [0.9]
        assert conn.execute(sa.select(db.predictions.c.top_k)).scalar_one()[0]["class"] == "c"
        assert conn.execute(sa.select(db.models.c.metrics)).scalar_one() == {"acc": 0.5}
        assert db.count_rows(conn, db.errors) == 1
        assert db.done_keys(conn, mid, [a, b, "c" * 64]) == {a, b}
        assert db.done_keys(conn, "other", [a, b]) == set()
    engine.dispose()


def test_foreign_keys_are_enforced(url: str) -> None:
    engine = db.open_db(url)
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(
            sa.insert(db.image_paths).values(sha256="z" * 64, path="/p", first_seen=db.now(), last_seen=db.now())
        )
    engine.dispose()


def test_sqlite_is_wal_with_busy_timeout(tmp_path: Path) -> None:
    engine = db.open_db(f"sqlite:///{tmp_path / 'c.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.SQLITE_BUSY_MS
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_a_failed_batch_leaves_nothing(tmp_path: Path) -> None:
    engine = db.open_db(f"sqlite:///{tmp_path / 'c.db'}")
    row = {"sha256": "a" * 64, "bytes": 1, "first_seen": db.now(), "last_seen": db.now()}
    with pytest.raises(ZeroDivisionError), engine.begin() as conn:
        db.touch(conn, db.images, [row], ["sha256"])
        _ = 1 / 0
    with engine.connect() as conn:
        assert db.count_rows(conn, db.images) == 0
    engine.dispose()
