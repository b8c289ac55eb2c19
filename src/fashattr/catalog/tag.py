"""``fashattr tag``: every image of a catalog tagged once per model, into the catalog database.

The unit of work is (content sha256, model id = bundle hash). A run streams the sources:

1. hash files (SHA-256 of their bytes) a chunk at a time, the next chunk on its own thread meanwhile;
2. drop what the database already has for this model (a ``predictions`` or ``errors`` row) and,
   within the run, a content already on its way (the same photo under two names is inferred once;
   every name is recorded in ``image_paths``);
3. decode the rest in worker threads (``portable.images`` pixels, as predict and training do);
4. run the model a batch at a time (``Runtime.infer`` when the bundle gives features: logits and
   the embedding from one pass; else ``Runtime.logits``) and decode;
5. write the batch's images, paths, predictions, embeddings and errors in ONE transaction.

Every insert is keyed (ON CONFLICT DO NOTHING), so a batch written twice (a Ray task retried,
two taggers on one database) leaves one copy, and a killed run leaves whole batches only: running
the same command again finishes the job. Memory is bounded: a chunk of hashes, ``ahead`` batches of
decoded pixels, two batches being written, and the contents in flight. The engines (local threads,
Ray Data) are in :mod:`fashattr.catalog.engines`; reading and writing one batch in
:mod:`fashattr.catalog.batch`.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from fashattr.catalog import db
from fashattr.catalog.batch import TagSummary
from fashattr.catalog.engines import run_local, run_ray
from fashattr.catalog.sources import count_sources, iter_sources
from fashattr.portable import bundle as bundle_format
from fashattr.portable import decoding

# --- the model --------------------------------------------------------------------------------------


def materialize(path: str | Path, backend: str = "auto", verify: bool = True) -> tuple[Path, str, str, Path | None]:
    """The bundle to tag with, its model id, the backend to run, and a temporary export to remove.

    A run folder is exported first (``fashattr export RUN --format F`` into a temp folder) so its
    rows carry the same id as that bundle would. ``backend="auto"``: the rule every command shares
    (deploy.runtime.resolve_backend: fp32 ONNX when the bundle has it, else torch; int8 only when asked
    for). The backend does not change the model id.
    """
    from fashattr.deploy.bundle import bundle_hash, temporary_bundle
    from fashattr.deploy.runtime import is_run_folder, resolve_backend

    path, tmp = Path(path), None
    if is_run_folder(path):
        path = temporary_bundle(path, backend, prefix="fashattr-tag-")
        tmp = path.parent
    return path, bundle_hash(path) if verify else "", resolve_backend(path, backend), tmp


def recorded_hash(bundle: Path) -> str:
    """The bundle hash from ``hashes.json``, for a bundle that was just verified (Runtime.from_bundle)."""
    return str(json.loads((bundle / "hashes.json").read_text())["bundle_hash"])


def tag(
    model: str | Path,
    sources: Iterable[str | Path],
    db_url: str = db.DEFAULT_URL,
    *,
    backend: str = "auto",
    batch_size: int = 32,
    workers: int = 2,
    threads: int | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    progress: bool = True,
    decode: str | None = None,
) -> TagSummary:
    """Tag every image of ``sources`` with ``model`` (a bundle or run folder) into ``db_url``.

    Args:
        model: a bundle folder (``fashattr export``) or a run folder (exported on the fly).
        sources: folders (recursive), image files, ``.csv`` / ``.parquet`` lists (column ``path``).
        db_url: SQLAlchemy URL; ``sqlite:///catalog.db`` by default.
        backend: ``auto``, ``torch``, ``onnx`` or ``onnx-int8``.
        batch_size: images per model call and per transaction.
        workers: hashing / decoding threads (local engine) or model actors (Ray engine).
        threads: model threads (None: the backend's default).
        engine: ``local`` or ``ray``.
        ray_address: the Ray cluster to join (``ray start --head`` prints it); None starts a local Ray.
        progress: show a tqdm bar on stderr.
        decode: the decoding mode (``accuracy``, ``balanced``, ``none``); None: the bundle's default. Each
            prediction row records the mode it was decoded with.

    Raises:
        SourceError: a source is missing or a URL (before anything is written).
        BundleError: the bundle fails verification.
    """
    from tqdm import tqdm

    if batch_size < 1 or workers < 1:
        raise ValueError(f"batch_size ({batch_size}) and workers ({workers}) must be at least 1")
    if engine not in ("local", "ray"):
        raise ValueError(f"unknown engine {engine!r}; choose from ['local', 'ray']")
    sources = list(sources)
    total = count_sources(sources)  # also checks every source before the model loads
    from fashattr.deploy.runtime import Runtime

    # The local engine verifies the bundle once, as it loads it (Runtime.from_bundle); the Ray driver here.
    bundle, model_id, backend, tmp = materialize(model, backend, verify=engine == "ray")
    runtime = None
    if engine == "local":
        runtime = Runtime.from_bundle(bundle, backend, threads=threads, decode=decode)
        model_id = recorded_hash(bundle)
    else:  # an unknown mode fails here, not in every actor
        decoding.decoding_for(bundle_format.read_bundle_config(bundle), decode)
    summary = TagSummary(model_id)
    start = time.perf_counter()
    bar = tqdm(total=total, unit="img", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    bar.set_postfix(errors=0)

    def on_progress(n: int, s: TagSummary) -> None:
        if s.first_result_s is None and s.tagged:
            s.first_result_s = time.perf_counter() - start
        bar.set_postfix(errors=sum(s.errors.values()), refresh=False)
        bar.update(n)

    try:
        eng = db.open_db(db_url)
        try:
            with eng.begin() as conn:
                db.register_model(conn, model_id, bundle_format.read_bundle_config(bundle))
            paths = iter_sources(sources)
            if engine == "ray":
                run_ray(
                    bundle,
                    eng,
                    model_id,
                    paths,
                    summary,
                    backend=backend,
                    threads=threads,
                    batch_size=batch_size,
                    workers=workers,
                    ray_address=ray_address,
                    on_progress=on_progress,
                    decode=decode,
                )
            else:
                run_local(
                    runtime,
                    eng,
                    model_id,
                    paths,
                    summary,
                    batch_size=batch_size,
                    workers=workers,
                    on_progress=on_progress,
                )
        finally:
            eng.dispose()
    finally:
        bar.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    summary.seconds = time.perf_counter() - start
    return summary
