"""Decode-once image cache: presized uint8 arrays in a memory-mapped file.

The cache is keyed by a fingerprint of the file list (paths, sizes, modification times),
the boxes, the crop settings and the size, so a stale cache is never read and a valid one
is shared by every run and process that asks for the same images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from fashattr.data.images import load_presized
from fashattr.data.table import Table
from fashattr.errors import ImageError

log = logging.getLogger(__name__)
CACHE_VERSION = 1  # bump when load_presized's output changes


def default_cache_dir() -> Path:
    return Path(os.environ.get("FASHATTR_CACHE", Path.home() / ".cache" / "fashattr"))


def fingerprint(table: Table, size: int, crop: bool, margin: float) -> str:
    """A digest of everything the cached pixels depend on."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|{size}|{crop}|{margin if crop else 0}".encode())
    for i, path in enumerate(table.files()):
        try:
            st = path.stat()
            h.update(f"|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
        except FileNotFoundError:
            raise ImageError(path, "file not found") from None
        if crop and table.bboxes is not None:
            h.update(table.bboxes[i].tobytes())
    return h.hexdigest()[:24]


def _decode(job: tuple[int, str, tuple[float, float, float, float] | None, int, float]) -> tuple[int, np.ndarray | str]:
    """Worker: one image to its presized array, or the error message (errors stay values
    so the parent raises them with the file named, whatever the process start method)."""
    i, path, box, size, margin = job
    try:
        return i, load_presized(path, size, box, margin)
    except ImageError as e:
        return i, str(e)


def _jobs(table: Table, size: int, crop: bool, margin: float) -> list[tuple]:
    boxes: Sequence[Any] = list(table.bboxes) if (crop and table.bboxes is not None) else [None] * len(table)
    return [
        (i, str(p), None if b is None else tuple(float(v) for v in b), size, margin)
        for i, (p, b) in enumerate(zip(table.files(), boxes, strict=True))
    ]


def build_cache(
    table: Table,
    size: int,
    crop: bool = False,
    margin: float = 0.0,
    cache_dir: str | Path | None = None,
    workers: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """Return ``(N, size, size, 3)`` uint8 pixels for ``table``, decoding only on a cache miss.

    Args:
        table: rows whose images to cache.
        size: side of the letterboxed square.
        crop: crop to the table's boxes (plus ``margin``) first, when it has boxes.
        cache_dir: where cache files live; default ``$FASHATTR_CACHE`` or ``~/.cache/fashattr``.
        workers: decode processes; 0 means one per core.

    Raises:
        ImageError: an image cannot be decoded (the file is named).
    """
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    key = fingerprint(table, size, crop, margin)
    data_path = folder / f"{key}.u8"
    shape = (len(table), size, size, 3)
    if data_path.exists() and data_path.stat().st_size == int(np.prod(shape)):
        log.info("image cache hit %s (%d images at %d px)", data_path, len(table), size)
        return np.memmap(data_path, dtype=np.uint8, mode="r", shape=shape)

    tmp = folder / f"{key}.u8.tmp{os.getpid()}"
    out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
    jobs = _jobs(table, size, crop, margin)
    n_proc = min(workers or os.cpu_count() or 1, max(1, len(jobs) // 64))
    bar = tqdm(total=len(jobs), desc=f"decode {table.split or 'images'} @{size}px", disable=not progress, unit="img")
    try:
        if n_proc > 1:
            # spawn: safe with torch's threads in the parent; workers import only PIL + NumPy code.
            with get_context("spawn").Pool(n_proc) as pool:
                _collect(pool.imap_unordered(_decode, jobs, chunksize=32), out, table, bar)
        else:
            _collect(map(_decode, jobs), out, table, bar)
        out.flush()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        del out
        os.replace(tmp, data_path)  # atomic: readers see a whole cache or none
        (folder / f"{key}.json").write_text(
            json.dumps({"split": table.split, "root": str(table.root), "n": len(table), "size": size, "crop": crop})
        )
    finally:
        bar.close()
        tmp.unlink(missing_ok=True)
    return np.memmap(data_path, dtype=np.uint8, mode="r", shape=shape)


def _collect(results, out: np.ndarray, table: Table, bar: tqdm) -> None:
    for i, arr in results:
        if isinstance(arr, str):
            raise ImageError(table.file(i), arr.split(": ", 1)[-1])
        out[i] = arr
        bar.update(1)
