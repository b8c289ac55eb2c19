"""Decode-once image cache: presized uint8 arrays in a memory-mapped file.

The cache is keyed by a fingerprint of the file list (paths, sizes, modification times),
the boxes, the crop settings, the size, the letterbox fill colour and the background-removal step (its method,
options and model file's sha256), so a stale cache is never read and a valid one is shared by every run and
process that asks for the same images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from fashattr.data.table import Table
from fashattr.errors import ImageError
from fashattr.fileio import atomic_write_text
from fashattr.portable.background import Background
from fashattr.portable.images import PAD_COLOR, load_presized

log = logging.getLogger(__name__)
CACHE_VERSION = 2  # bump when load_presized's output changes (2: full-resolution decode, one letterbox rule)


def default_cache_dir() -> Path:
    return Path(os.environ.get("FASHATTR_CACHE", Path.home() / ".cache" / "fashattr"))


def fingerprint(
    table: Table,
    size: int,
    crop: bool,
    margin: float,
    fill: tuple[int, int, int] = PAD_COLOR,
    background: Background | None = None,
) -> str:
    """A digest of everything the cached pixels depend on."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|{size}|{crop}|{margin if crop else 0}|{tuple(fill)}".encode())
    if background is not None:  # only then: caches of photos kept as they are keep their keys
        h.update(f"|background={background.key()}".encode())
    for i, path in enumerate(table.files()):
        try:
            st = path.stat()
            h.update(f"|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
        except FileNotFoundError:  # decoding reports it, together with every other unreadable image
            h.update(f"|{path.resolve()}|missing".encode())
        if crop and table.bboxes is not None:
            h.update(table.bboxes[i].tobytes())
    return h.hexdigest()[:24]


Job = tuple[int, str, tuple[float, float, float, float] | None, int, float, tuple[int, int, int], Background | None]


def _decode(job: Job) -> tuple[int, np.ndarray | str]:
    """Worker: one image to its presized array, or the error message (errors stay values
    so the parent raises them with the file named, whatever the process start method)."""
    i, path, box, size, margin, fill, background = job
    try:
        return i, load_presized(path, size, box, margin, fill, background)
    except ImageError as e:
        return i, str(e)


def _jobs(
    table: Table, size: int, crop: bool, margin: float, fill: tuple[int, int, int], background: Background | None
) -> list[Job]:
    boxes: Sequence[Any] = list(table.bboxes) if (crop and table.bboxes is not None) else [None] * len(table)
    jobs: list[Job] = []
    for i, (p, b) in enumerate(zip(table.files(), boxes, strict=True)):
        # A row without a box (NaN, e.g. an empty CSV cell) is used whole.
        box = None if b is None or np.isnan(b).any() else (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
        jobs.append((i, str(p), box, size, margin, fill, background))
    return jobs


def bad_images_error(table: Table, bad: dict[int, str]) -> ImageError:
    """One error naming every unreadable image of ``table`` (row index -> why), with their count.

    Every file is listed, however many: a user fixing a dataset needs the whole list, not the
    first entry of it. The error's ``file`` is the first bad image.
    """
    rows = sorted(bad)
    where = f"split {table.split!r} of {table.root}" if table.split else str(table.root)
    err = ImageError(table.file(rows[0]), bad[rows[0]])
    err.args = (
        f"{len(rows)} unreadable image(s) of {len(table)} in {where} "
        "(data.on_bad_image=skip leaves them out):\n" + "\n".join(f"{table.file(i)}: {bad[i]}" for i in rows),
    )
    return err


@dataclass
class ImageCache:
    """Presized pixels of a table's rows, and the rows whose image could not be decoded.

    Attributes:
        pixels: ``(N, size, size, 3)`` uint8, a read-only memmap; rows in ``bad`` are zeros.
        bad: row index -> why its image was unreadable (empty unless built with ``on_bad="skip"``).
    """

    pixels: np.ndarray
    bad: dict[int, str] = field(default_factory=dict)


def cache_images(
    table: Table,
    size: int,
    crop: bool = False,
    margin: float = 0.0,
    cache_dir: str | Path | None = None,
    workers: int = 0,
    progress: bool = True,
    on_bad: str = "error",
    fill: tuple[int, int, int] = PAD_COLOR,
    background: Background | None = None,
) -> ImageCache:
    """Presized pixels for ``table``, decoding only on a cache miss.

    Args:
        table: rows whose images to cache.
        size: side of the letterboxed square.
        crop: crop to the table's boxes (plus ``margin``) first, when it has boxes.
        cache_dir: where cache files live; default ``$FASHATTR_CACHE`` or ``~/.cache/fashattr``.
        workers: decode processes; 0 means one per core.
        on_bad: ``error`` decodes every image, then raises one error listing each unreadable
            one; ``skip`` records every one in ``ImageCache.bad`` (a cache hit reports them
            too) for the caller to count and list.
        fill: letterbox colour, ``fill_color(data.mean)``; part of the cache key.
        background: background removal (``portable.background.background_for(data)``), after the crop and
            before the letterbox; its method, options and model sha256 are part of the cache key.

    Raises:
        ImageError: images cannot be decoded and ``on_bad`` is ``error``; the message names
            every such file with its reason, and their count.
    """
    if on_bad not in ("error", "skip"):
        raise ValueError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    key = fingerprint(table, size, crop, margin, fill, background)
    data_path, meta_path = folder / f"{key}.u8", folder / f"{key}.json"
    shape = (len(table), size, size, 3)
    cached = _read_hit(data_path, meta_path, shape)
    if cached is not None:
        log.info("image cache hit %s (%d images at %d px)", data_path, len(table), size)
        result = ImageCache(np.memmap(data_path, dtype=np.uint8, mode="r", shape=shape), cached)
    else:
        result = _build(table, size, crop, margin, fill, folder, key, shape, workers, progress, on_bad, background)
    if result.bad and on_bad == "error":
        raise bad_images_error(table, result.bad)
    return result


def _read_hit(data_path: Path, meta_path: Path, shape: tuple[int, ...]) -> dict[int, str] | None:
    """The bad rows of a complete cache, or None when there is no valid cache."""
    if not (data_path.exists() and meta_path.exists() and data_path.stat().st_size == int(np.prod(shape))):
        return None
    try:
        return {int(k): str(v) for k, v in json.loads(meta_path.read_text())["bad"].items()}
    except (ValueError, KeyError, TypeError):
        return None  # an older or damaged sidecar: rebuild


def _build(
    table: Table,
    size: int,
    crop: bool,
    margin: float,
    fill: tuple[int, int, int],
    folder: Path,
    key: str,
    shape: tuple[int, ...],
    workers: int,
    progress: bool,
    on_bad: str,
    background: Background | None = None,
) -> ImageCache:
    tmp = folder / f"{key}.u8.tmp{os.getpid()}"
    out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
    jobs = _jobs(table, size, crop, margin, fill, background)
    n_proc = min(workers or os.cpu_count() or 1, max(1, len(jobs) // 64))
    bar = tqdm(total=len(jobs), desc=f"decode {table.split or 'images'} @{size}px", disable=not progress, unit="img")
    bad: dict[int, str] = {}
    try:
        if n_proc > 1:
            # spawn: safe with torch's threads in the parent; workers import only PIL + NumPy code.
            with get_context("spawn").Pool(n_proc) as pool:
                _collect(pool.imap_unordered(_decode, jobs, chunksize=32), out, bar, bad)
        else:
            _collect(map(_decode, jobs), out, bar, bad)
        if bad and on_bad == "error":  # every image was tried, so the error lists them all; no cache kept
            raise bad_images_error(table, bad)
        out.flush()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        del out
        meta = {
            "split": table.split,
            "root": str(table.root),
            "n": len(table),
            "size": size,
            "crop": crop,
            "fill": list(fill),
            **({"background": background.to_json()} if background is not None else {}),
            "bad": {str(i): why for i, why in sorted(bad.items())},
        }
        atomic_write_text(folder / f"{key}.json", json.dumps(meta, indent=1))  # first: a hit needs it
        os.replace(tmp, folder / f"{key}.u8")  # atomic: readers see a whole cache or none
    finally:
        bar.close()
        tmp.unlink(missing_ok=True)
    return ImageCache(np.memmap(folder / f"{key}.u8", dtype=np.uint8, mode="r", shape=shape), bad)


def _collect(results: Iterable[tuple[int, np.ndarray | str]], out: np.ndarray, bar: tqdm, bad: dict[int, str]) -> None:
    for i, arr in results:
        if isinstance(arr, str):
            bad[i] = arr.split(": ", 1)[-1]
        else:
            out[i] = arr
        bar.update(1)
