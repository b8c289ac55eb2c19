"""Shared pieces of the catalog tests: a tiny bundle (random-init test_resnet, 32 px, ONNX) and a
folder of real JPEG files with a byte-identical copy and bad images among them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from conftest import draw, untrained_run
from PIL import Image

from fashattr.catalog import db

N_GOOD = 40  # distinct photos
BAD = {"bad/not_an_image.jpg": "not an image Pillow can identify", "bad/truncated.jpg": "truncated or corrupt image"}


def make_bundle(out: Path, seed: int = 0, size: int = 32, formats: tuple[str, ...] = ("onnx",)) -> Path:
    """A bundle (with ONNX by default) of a random-init test_resnet for the ai6126 schema (no training)."""
    from fashattr.deploy.bundle import write_bundle

    run = untrained_run(None, out, size=size, seed=seed, name=f"run{seed}")
    return write_bundle(run, out / f"bundle{seed}", formats=formats)


def shared_bundle(factory: Any) -> Path:
    """One ONNX bundle per test session (pytest's base temp folder), shared by the catalog test modules:
    the ONNX export is the slow part of their set-up."""
    root = Path(factory.getbasetemp()) / "catalog_bundle"
    if not (root / "bundle0" / "hashes.json").is_file():
        shutil.rmtree(root, ignore_errors=True)
        make_bundle(root)
    return root / "bundle0"


def make_photos(root: Path, n: int = N_GOOD, seed: int = 0) -> Path:
    """``n`` distinct JPEGs in two sub-folders, one byte-identical copy under another name, two bad files."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        labels = rng.integers(0, 3, size=6)
        p = root / ("a" if i % 2 else "b") / f"{i:04d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(draw(labels, rng, 40 + i % 7, 48)).save(p, quality=90)
    shutil.copyfile(root / "b" / "0000.jpg", root / "copy_of_0000.jpg")
    (root / "bad").mkdir()
    (root / "bad" / "not_an_image.jpg").write_bytes(b"this is not a JPEG")
    data = (root / "a" / "0001.jpg").read_bytes()
    (root / "bad" / "truncated.jpg").write_bytes(data[: len(data) // 3])
    return root


def table_counts(url: str) -> dict[str, int]:
    engine = db.create_db_engine(url)
    try:
        with engine.connect() as conn:
            return {t.name: db.count_rows(conn, t) for t in (db.images, db.image_paths, db.predictions, db.errors)}
    finally:
        engine.dispose()


def check_exactly_once(url: str, model_id: str, groups: int = 6) -> tuple[int, int]:
    """Every image of the model has all ``groups`` predictions or none, and an error row only when it has
    none; returns (images with predictions, error rows)."""
    engine = db.create_db_engine(url)
    try:
        with engine.connect() as conn:
            p = db.predictions
            per_image = conn.execute(
                sa.select(p.c.sha256, sa.func.count()).where(p.c.model_id == model_id).group_by(p.c.sha256)
            ).all()
            assert {n for _, n in per_image} <= {groups}, "a partial batch: an image with only some groups"
            errs = conn.execute(sa.select(db.errors.c.sha256).where(db.errors.c.model_id == model_id)).scalars().all()
            assert len(errs) == len(set(errs)), "an error recorded twice"
            assert not set(errs) & {s for s, _ in per_image}, "an image with both predictions and an error"
            return len(per_image), len(errs)
    finally:
        engine.dispose()
