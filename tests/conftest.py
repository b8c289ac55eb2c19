"""Shared fixtures: tiny datasets in the FashionDataset layout, written by the tests themselves.

Tests marked ``realdata`` read the real FashionDataset (``$FASHATTR_DATA``, else
``../shared/data/FashionDataset``). Without it they skip, naming the path; under CI
(``CI=true``) that skip is a failure, so a missing dataset can't leave CI green.
"""

from __future__ import annotations

import os

# `make test` runs pytest-xdist workers side by side. Each worker's math libraries would start
# one thread per core, oversubscribing the machine, so split the cores between the workers.
# Set before NumPy and PyTorch load (they read it once); subprocesses the tests start inherit it.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ and "OMP_NUM_THREADS" not in os.environ:
    _workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _workers))

import importlib.util
from collections.abc import Generator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from fashattr.schema import AI6126_GROUPS

REAL_DATA = Path(
    os.environ.get("FASHATTR_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data" / "FashionDataset"
)
SIZES = [len(c) for c in AI6126_GROUPS.values()]
# Seven clearly different colours; region g of an image shows the colour of group g's class.
PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240]],
    dtype=np.float32,
)


def draw(labels: np.ndarray, rng: np.random.Generator, width: int = 40, height: int = 48) -> np.ndarray:
    """An RGB image whose 6 regions (2 x 3 grid) show one colour per group's class, plus noise."""
    img = rng.normal(128, 20, size=(height, width, 3)).astype(np.float32)
    for g, c in enumerate(labels):
        r, col = divmod(g, 2)
        y0, x0 = r * height // 3, col * width // 2
        img[y0 : y0 + height // 3, x0 : x0 + width // 2] = PALETTE[c] + rng.normal(0, 12, size=3)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_dataset(
    root: Path, splits: dict[str, int], labeled: tuple[str, ...] = ("train",), seed: int = 0, bbox: bool = False
) -> Path:
    """Write a FashionDataset-layout dataset: ``splits`` maps split name -> image count."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "split").mkdir(exist_ok=True)
    k = 0
    for split, n in splits.items():
        names, rows, boxes = [], [], []
        for _ in range(n):
            # Skewed class frequencies, like the real data; every class appears at least twice.
            labels = np.array([rng.choice(s, p=np.arange(s, 0, -1) / (s * (s + 1) / 2)) for s in SIZES])
            if len(rows) < 2 * max(SIZES):
                labels = np.array([(len(rows) // 2) % s for s in SIZES])
            name = f"img/{k:05d}.jpg"
            Image.fromarray(draw(labels, rng)).save(root / name, quality=95)
            names.append(name)
            rows.append(labels)
            boxes.append((2, 3, 38, 45))
            k += 1
        (root / "split" / f"{split}.txt").write_text("".join(f"{p}\n" for p in names))
        if split in labeled:
            (root / "split" / f"{split}_attr.txt").write_text("".join(" ".join(map(str, r)) + "\n" for r in rows))
        if bbox:
            (root / "split" / f"{split}_bbox.txt").write_text("".join(" ".join(map(str, b)) + "\n" for b in boxes))
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """160 labeled train images, 24 unlabeled val and 20 unlabeled test images."""
    return make_dataset(tmp_path_factory.mktemp("tiny") / "FashionDataset", {"train": 160, "val": 24, "test": 20})


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def real_data() -> Path:
    if not (REAL_DATA / "split" / "train.txt").exists():
        pytest.skip(f"real FashionDataset not found at {REAL_DATA}")
    return REAL_DATA


def in_ci() -> bool:
    """True where the CI convention variable says so (``CI=true``, as CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    """Under CI, a skipped ``realdata`` test fails: CI must not pass without having read the real data."""
    report = yield
    assert isinstance(report, pytest.TestReport)
    if report.skipped and in_ci() and item.get_closest_marker("realdata") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"{reason.removeprefix('Skipped: ')}; CI=true needs the real data (set FASHATTR_DATA)"
    return report


@pytest.fixture(scope="session")
def pg_cluster() -> Generator[object, None, None]:
    """A throw-away PostgreSQL cluster for the session (tests/pg_cluster.py): initdb into a temp
    folder as an unprivileged user, a free loopback port, trust auth; stopped and removed at the end.
    Skips when PostgreSQL is not installed; under CI (``CI=true``) that is a failure."""
    from pg_cluster import PgCluster, pg_bin

    if pg_bin() is None:
        reason = "PostgreSQL server binaries not found (tools/system-deps.sh installs them)"
        if in_ci():
            pytest.fail(f"PostgreSQL tests cannot run under CI: {reason}")
        pytest.skip(reason)
    cluster = PgCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_url(pg_cluster: object) -> str:
    """SQLAlchemy URL (``postgresql+psycopg://...``) of an empty database on the session's cluster."""
    return pg_cluster.create_database("fashattr")  # type: ignore[attr-defined]


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/NAME.py`` as a module (the benchmarks are scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_overrides(data: Path, cache: Path, out: Path, **extra: object) -> list[str]:
    """Overrides for a fast CPU run on a tiny dataset."""
    base = {
        "data.root": str(data),
        "data.image_size": 32,
        "data.cache_dir": str(cache),
        "data.workers": 1,
        "data.holdout": 0.25,
        "model.backbone": "test_resnet",
        "train.epochs": 2,
        "train.batch_size": 16,
        "train.progress": False,
        "train.threads": 1,
        "optim.lr": 3e-3,
        "sched.warmup_epochs": 0,
        "out_dir": str(out),
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def untrained_run(
    root: Path | None,
    out: Path,
    overrides: list[str] | tuple[str, ...] = (),
    size: int = 64,
    seed: int = 0,
    name: str = "run",
) -> Path:
    """A run folder ``out/name`` (config, schema, random-init test_resnet weights from ``seed``) for the
    dataset at ``root`` (None: the config's default root), without training: what runtime, bundle, serve
    and pixel tests need from a run."""
    import torch

    from fashattr.config import load_config, save_config
    from fashattr.engine.checkpoint import save_weights
    from fashattr.models import create_model
    from fashattr.schema import ai6126_schema

    base = [f"data.image_size={size}", "model.backbone=test_resnet", f"data.cache_dir={out / 'c'}"]
    if root is not None:
        base.insert(0, f"data.root={root}")
    cfg = load_config(None, [*base, *overrides])
    run = out / name
    run.mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    ai6126_schema().save(run / "schema.yaml")
    torch.manual_seed(seed)
    save_weights(create_model(cfg.model, ai6126_schema(), size), run / "best.safetensors")
    return run
