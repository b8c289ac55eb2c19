"""The catalog database: tables, schema version and migrations, and the upserts that tagging uses.

SQLAlchemy Core (no ORM): the same tables on SQLite (the embedded default, ``sqlite:///catalog.db``)
and PostgreSQL (``postgresql+psycopg://user@host:port/db``). :func:`open_db` creates the tables or
upgrades an older database to :data:`SCHEMA_VERSION` by running the :data:`MIGRATIONS` it lacks.

Tables (names and columns are a contract that search, export and similar build on):

``schema_version``
    ``version`` (int, PK), ``applied`` (timestamp): one row per applied migration.
``images``: one row per distinct content
    ``sha256`` (hex, PK), ``bytes``, ``width``, ``height`` (of the EXIF-oriented image; NULL when it
    could not be decoded), ``first_seen``, ``last_seen``.
``image_paths``: where a content was seen (a content can live under several paths)
    ``sha256`` (FK images), ``path`` (absolute), ``first_seen``, ``last_seen``; PK (sha256, path).
``models``: one row per bundle
    ``model_id`` (the bundle hash, PK), ``name``, ``schema`` (JSON: the bundle schema), ``metrics``
    (JSON), ``decoding`` (JSON: the bundle's decoding section), ``created``.
``predictions``: one row per image x model x group
    ``sha256`` (FK images), ``model_id`` (FK models), ``group_name``, ``class_name``, ``class_index``,
    ``probability``, ``top_k`` (JSON list of ``{"class", "index", "prob"}``), ``decoding`` (the
    decoding mode's name or NULL), ``unsure`` (schema 2: the answer was below the bundle's ``unsure_below``;
    NULL for multi-label groups and rows tagged before), ``created``; PK (sha256, model_id, group_name). Single-label
    groups: the top class. Multi-label groups: ``class_name`` is the predicted classes joined by
    ``|`` (``""`` for none), ``class_index`` -1, ``probability`` the highest of them (0 for none),
    ``top_k`` every predicted class.
``embeddings``: the model's pooled features per image
    ``sha256`` (FK images), ``model_id`` (FK models), ``dim``, ``vector`` (float32 little-endian
    bytes, ``dim * 4`` long); PK (sha256, model_id).
``errors``: images a model could not tag
    ``id`` (PK), ``sha256`` (NULL when the file could not even be read), ``path``, ``model_id``
    (FK models), ``reason``, ``seen``; unique (sha256, model_id).
``wardrobe_items`` (schema 3): the items of a person's wardrobe (``fashattr wardrobe``)
    ``wardrobe`` (its name), ``item`` (the person's name for it, unique in the wardrobe), ``sha256`` (FK images:
    its photo's content), ``path`` (the photo as added), ``category`` (the person's own category, or NULL),
    ``added``; PK (wardrobe, item).

The unit of work is (sha256, model_id): it is done when a ``predictions`` or an ``errors`` row
exists for it. Tagging writes the images, paths, predictions, embeddings and errors of one batch in
one transaction, so a killed run leaves whole batches or nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

DEFAULT_URL = "sqlite:///catalog.db"
SQLITE_BUSY_MS = 60_000

metadata = sa.MetaData()
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Ts = sa.DateTime(timezone=True)
Hash = sa.String(64)

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied", Ts, nullable=False),
)
images = sa.Table(
    "images",
    metadata,
    sa.Column("sha256", Hash, primary_key=True),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("width", sa.Integer),
    sa.Column("height", sa.Integer),
    sa.Column("first_seen", Ts, nullable=False),
    sa.Column("last_seen", Ts, nullable=False),
)
image_paths = sa.Table(
    "image_paths",
    metadata,
    sa.Column("sha256", Hash, sa.ForeignKey("images.sha256"), primary_key=True),
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("first_seen", Ts, nullable=False),
    sa.Column("last_seen", Ts, nullable=False),
    sa.Index("ix_image_paths_path", "path"),
)
models = sa.Table(
    "models",
    metadata,
    sa.Column("model_id", Hash, primary_key=True),
    sa.Column("name", sa.Text),
    sa.Column("schema", Json, nullable=False),
    sa.Column("metrics", Json),
    sa.Column("decoding", Json),
    sa.Column("created", Ts, nullable=False),
)
predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("sha256", Hash, sa.ForeignKey("images.sha256"), primary_key=True),
    sa.Column("model_id", Hash, sa.ForeignKey("models.model_id"), primary_key=True),
    sa.Column("group_name", sa.String(128), primary_key=True),
    sa.Column("class_name", sa.Text, nullable=False),
    sa.Column("class_index", sa.Integer, nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("top_k", Json),
    sa.Column("decoding", sa.String(64)),
    sa.Column("unsure", sa.Boolean),  # schema 2 (_v2)
    sa.Column("created", Ts, nullable=False),
    # Attribute search: WHERE model_id = ? AND group_name = ? AND class_name = ? AND probability >= ?
    sa.Index("ix_predictions_attr", "model_id", "group_name", "class_name", "probability"),
)
embeddings = sa.Table(
    "embeddings",
    metadata,
    sa.Column("sha256", Hash, sa.ForeignKey("images.sha256"), primary_key=True),
    sa.Column("model_id", Hash, sa.ForeignKey("models.model_id"), primary_key=True),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("vector", sa.LargeBinary, nullable=False),
)
errors = sa.Table(
    "errors",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("sha256", Hash),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("model_id", Hash, sa.ForeignKey("models.model_id"), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("seen", Ts, nullable=False),
    sa.UniqueConstraint("sha256", "model_id", name="uq_errors_sha256_model"),
    sa.Index("ix_errors_model", "model_id"),
)
V1_TABLES = (schema_version, images, image_paths, models, predictions, embeddings, errors)
wardrobe_items = sa.Table(  # schema 3 (_v3)
    "wardrobe_items",
    metadata,
    sa.Column("wardrobe", sa.String(128), primary_key=True),
    sa.Column("item", sa.String(512), primary_key=True),
    sa.Column("sha256", Hash, sa.ForeignKey("images.sha256"), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("category", sa.Text),
    sa.Column("added", Ts, nullable=False),
)


# --- migrations: version -> function(connection); a later release appends, never edits -----------------


def _v1(conn: Connection) -> None:
    """The first schema: every table above, with its indices."""
    metadata.create_all(conn, tables=list(V1_TABLES))


def _v2(conn: Connection) -> None:
    """``predictions.unsure``: the flag `fashattr predict` and `serve` show, kept so `search --sure` can leave
    unsure answers out. A database made by this release has it from _v1's tables already."""
    if "unsure" not in {c["name"] for c in sa.inspect(conn).get_columns("predictions")}:
        conn.execute(sa.text("ALTER TABLE predictions ADD COLUMN unsure BOOLEAN"))


def _v3(conn: Connection) -> None:
    """``wardrobe_items``: the items of ``fashattr wardrobe``, a person's clothes among the catalog's photos."""
    metadata.create_all(conn, tables=[wardrobe_items])


Migration = Callable[[Connection], None]
MIGRATIONS: list[tuple[int, Migration]] = [(1, _v1), (2, _v2), (3, _v3)]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def now() -> dt.datetime:
    """The timestamp every row records (UTC, timezone-aware)."""
    return dt.datetime.now(dt.UTC)


def current_version(conn: Connection) -> int:
    """The database's schema version: 0 for an empty database."""
    if not sa.inspect(conn).has_table("schema_version"):
        return 0
    return int(conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0)


def migrate(conn: Connection, migrations: Sequence[tuple[int, Migration]] = MIGRATIONS) -> list[int]:
    """Apply the migrations newer than the database's version, in order; returns the versions applied.

    Raises:
        RuntimeError: the database is newer than this fashattr knows (it names both versions).
    """
    have = current_version(conn)
    latest = migrations[-1][0] if migrations else 0
    if have > latest:
        raise RuntimeError(
            f"catalog database schema version {have} is newer than this fashattr's ({latest}); upgrade fashattr"
        )
    applied = []
    for version, fn in migrations:
        if version > have:
            fn(conn)
            conn.execute(sa.insert(schema_version).values(version=version, applied=now()))
            applied.append(version)
    return applied


def _sqlite_setup(engine: Engine) -> None:
    """WAL (readers never block the writer), foreign keys, a busy timeout; and real transactions.

    pysqlite begins transactions lazily (at the first INSERT) and never for SELECTs; SQLAlchemy's
    documented fix is to switch that off and emit BEGIN ourselves, so a batch is one transaction.
    """

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a killed process never loses a committed transaction (only power loss can).
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # Deferred by default: readers never take the write lock (WAL lets them read beside a writer),
        # and tagging's write transactions start with a write, so they never upgrade a read lock.
        # IMMEDIATE where a transaction reads first and then writes (the migration): two processes
        # wait on the busy timeout instead of failing with "database is locked" on the upgrade.
        immediate = conn.get_execution_options().get("sqlite_immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_db_engine(url: str = DEFAULT_URL, **kw: Any) -> Engine:
    """A SQLAlchemy engine for ``url`` with fashattr's SQLite settings (no schema work)."""
    engine = sa.create_engine(url, **kw)
    if engine.dialect.name == "sqlite":
        _sqlite_setup(engine)
    return engine


def open_db(url: str = DEFAULT_URL, **kw: Any) -> Engine:
    """Open (creating or upgrading) the catalog database at ``url``.

    Example:
        >>> engine = open_db("sqlite:///catalog.db")
        >>> engine = open_db("postgresql+psycopg://tagger@db.local/catalog")

    Raises:
        RuntimeError: the database's schema is newer than this fashattr.
        sqlalchemy.exc.OperationalError: the database cannot be reached.
    """
    engine = create_db_engine(url, **kw)
    with engine.connect() as conn:
        conn.execution_options(sqlite_immediate=True)
        with conn.begin():
            if engine.dialect.name == "postgresql":
                # Two taggers starting at once: one migrates, the other waits and finds it done.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(7432013)"))
            migrate(conn)
    return engine


# --- writes and lookups used by tagging -------------------------------------------------------------


def _insert(conn: Connection) -> Any:
    """The dialect's INSERT that supports ON CONFLICT (SQLite and PostgreSQL share the syntax)."""
    from sqlalchemy.dialects import sqlite

    name = conn.dialect.name
    if name == "sqlite":
        return sqlite.insert
    if name == "postgresql":
        return postgresql.insert
    raise ValueError(f"catalog databases are SQLite or PostgreSQL, not {name!r}")


def insert_ignore(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT rows, skipping those whose key already exists (ON CONFLICT DO NOTHING)."""
    if rows:
        conn.execute(_insert(conn)(table).on_conflict_do_nothing(), list(rows))


def touch(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> None:
    """INSERT rows; for an existing key only move ``last_seen`` forward (images, image_paths)."""
    if rows:
        stmt = _insert(conn)(table)
        stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_={"last_seen": stmt.excluded.last_seen})
        conn.execute(stmt, list(rows))


def driver_value(dialect: sa.Dialect, column: sa.Column[Any], value: Any) -> Any:
    """``value`` as the DBAPI driver takes it for ``column`` (SQLite stores timestamps as text): convert
    a value shared by many rows once, then hand the rows to :func:`insert_many`."""
    proc = column.type.dialect_impl(dialect).bind_processor(dialect)
    return proc(value) if proc else value


def insert_many(
    conn: Connection,
    table: sa.Table,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    keys: Sequence[str] = (),
) -> None:
    """Keyed INSERT of many rows in one driver call: ON CONFLICT DO NOTHING, or with ``keys``, move
    ``last_seen`` forward on a conflict (as :func:`touch`).

    ``rows`` are tuples in ``columns`` order, already as the driver takes them: JSON columns as JSON
    text, timestamps through :func:`driver_value`. The tag writer's hot path: SQLAlchemy's per-row
    parameter processing cost more CPU than the inserts themselves (benchmarks/tag_write.py: writer
    CPU per image 0.48 -> 0.30 ms on SQLite, 0.73 -> 0.25 ms on PostgreSQL).
    """
    if not rows:
        return
    name = conn.dialect.name
    _insert(conn)  # checks the dialect
    action = "DO NOTHING"
    if keys:
        action = f"({', '.join(keys)}) DO UPDATE SET last_seen = excluded.last_seen"
    if name == "sqlite":  # sqlite3's executemany loops in C; JSON is stored as its text
        marks = ", ".join("?" * len(columns))
        conn.exec_driver_sql(
            f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks}) ON CONFLICT {action}", list(rows)
        )
        return
    # PostgreSQL: one statement of one array parameter per column (psycopg's executemany sends a
    # statement per row, and a long multi-row VALUES costs psycopg more to parse than the rows to send).
    arrays = ", ".join(f"%b::{table.c[c].type.compile(dialect=conn.dialect)}[]" for c in columns)
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays}) ON CONFLICT {action}"
    # Binary parameters (%b): psycopg dumps arrays in the text format with a regex per element.
    with conn.connection.driver_connection.cursor() as cur:  # type: ignore[union-attr]
        cur.execute(sql, tuple(list(col) for col in zip(*rows, strict=True)))


def register_model(conn: Connection, model_id: str, config: dict[str, Any], name: str | None = None) -> None:
    """Record a bundle in ``models`` once (its schema, metrics and decoding from its config.json)."""
    row = {
        "model_id": model_id,
        "name": name or (config.get("source") or {}).get("run"),
        "schema": config["schema"],
        "metrics": config.get("metrics"),
        "decoding": config.get("decoding"),
        "created": now(),
    }
    insert_ignore(conn, models, [row])


def done_keys(conn: Connection, model_id: str, sha256s: Iterable[str], chunk: int = 500) -> set[str]:
    """Those of ``sha256s`` that ``model_id`` has already tagged (a prediction or an error row)."""
    out: set[str] = set()
    todo = list(dict.fromkeys(sha256s))
    for i in range(0, len(todo), chunk):
        part = todo[i : i + chunk]
        for table in (predictions, errors):
            q = sa.select(table.c.sha256).where(table.c.model_id == model_id, table.c.sha256.in_(part)).distinct()
            out.update(conn.execute(q).scalars())
    return out


def count_rows(conn: Connection, table: sa.Table, **where: Any) -> int:
    """``SELECT count(*) FROM table WHERE col = value ...``."""
    q = sa.select(sa.func.count()).select_from(table)
    for col, value in where.items():
        q = q.where(table.c[col] == value)
    return int(conn.execute(q).scalar_one())
