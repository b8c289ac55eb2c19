"""What one image of ``fashattr tag`` is while it is tagged, and the model step, without the database.

Kept apart from :mod:`fashattr.catalog.tag` (SQLAlchemy, the database) so that a Ray actor, which
imports the module of its class in a fresh worker process, loads only what it runs: numpy, Pillow and
the runtime. SQLAlchemy and the catalog's tables made most of the import time of the module the
actor class used to live in (``python -X importtime -c "import fashattr.catalog.engines"``), paid at
each actor's start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fashattr.errors import ImageError
from fashattr.portable import images

TOP_K = 5  # classes kept per single-label group in predictions.top_k


@dataclass
class Work:
    """One content to tag: its hash, size, first path, and other paths with the same bytes."""

    sha256: str
    path: str
    size: int
    more_paths: list[str] = field(default_factory=list)
    width: int | None = None
    height: int | None = None
    error: str | None = None

    @property
    def paths(self) -> list[str]:
        return [self.path, *self.more_paths]


def infer_rows(runtime: Any, pixels: np.ndarray) -> tuple[list[dict[str, Any]], np.ndarray | None]:
    """Decoded records and embeddings (or None) for a batch of pixels: one forward pass."""
    if getattr(runtime, "has_features", False):
        logits, features = runtime.infer(pixels)
    else:
        logits, features = runtime.logits(pixels), None
    return runtime.decode(logits, TOP_K), features


def decode_work(work: Work, size: int, fill: tuple[int, int, int], background: Any = None) -> np.ndarray | None:
    """Letterboxed pixels (as ``images.load_presized``, with the runtime's ``background`` removal),
    recording width/height or the error."""
    try:
        img = images.open_image(work.path)
        work.width, work.height = img.width, img.height
        if background is not None:
            img = background.apply(img)
    except ImageError as e:
        work.error = e.message
        return None
    except ValueError as e:  # background removal of an image too small for it: an error of this image
        work.error = str(e)
        return None
    return images.letterbox(img, size, fill)


class Tagger:
    """A Ray Data actor (``fashattr tag --engine ray``): one Runtime, called on batches
    ``{"sha256", "path"}`` -> decoded rows, JSON records and little-endian float32 embeddings."""

    def __init__(self, bundle: str, backend: str, threads: int | None, decode: str | None = None) -> None:
        from fashattr.deploy.runtime import Runtime

        self.runtime = Runtime.from_bundle(bundle, backend, threads=threads, decode=decode)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        works = [Work(str(s), str(p), 0) for s, p in zip(batch["sha256"], batch["path"], strict=True)]
        arrays = [decode_work(w, self.runtime.image_size, self.runtime.fill, self.runtime.background) for w in works]
        good = [i for i, a in enumerate(arrays) if a is not None]
        records: list[str] = [""] * len(works)
        embs: list[bytes] = [b""] * len(works)
        if good:
            decoded, feats = infer_rows(self.runtime, np.stack([arrays[i] for i in good]))  # type: ignore[misc]
            for j, i in enumerate(good):
                records[i] = json.dumps(decoded[j])
                if feats is not None:
                    embs[i] = np.ascontiguousarray(feats[j], dtype="<f4").tobytes()
        return {
            "sha256": np.array([w.sha256 for w in works], dtype=object),
            "width": np.array([w.width if w.width is not None else -1 for w in works]),
            "height": np.array([w.height if w.height is not None else -1 for w in works]),
            "error": np.array([w.error or "" for w in works], dtype=object),
            "record": np.array(records, dtype=object),
            "embedding": np.array(embs, dtype=object),
        }
