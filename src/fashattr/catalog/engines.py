"""The engines of ``fashattr tag``: local (threads in this process) and Ray Data (``--engine ray``).

The local engine hashes and decodes in threads, runs the model on the calling thread and writes
on one writer thread. The Ray engine puts the model on an actor pool and writes on the driver.

Ray: the driver does what needs the database: it hashes the sources, drops what is done and what is
already on its way (``tag.Reader``, as the local engine), and writes every batch that comes back
in one transaction (``tag.write_batch``: keyed inserts, so a batch that a retried task returns
twice leaves one copy). Ray Data does the rest: ``from_items`` of (sha256, path) ->
``map_batches`` with an actor pool (``workers`` actors, :class:`~fashattr.catalog.work.Tagger`) whose
actors each hold a :class:`~fashattr.deploy.runtime.Runtime`, decode the files and run the model. A killed actor
is restarted and its task retried (Ray Data's defaults for an actor pool); nothing is lost and
nothing doubles.

The work goes to Ray a window at a time (``window`` contents, e.g. 8192), so the driver's memory
stays bounded for any catalog; each window starts a fresh actor pool (model load: about a
second per actor, against minutes of work per window).

On a cluster (``--ray-address``), every node needs fashattr installed and the bundle and the
image files at the same paths (a shared file system); the driver needs the database.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from fashattr.catalog import db
from fashattr.catalog.batch import HASH_CHUNK, Reader, TagSummary, write_batch
from fashattr.catalog.work import Tagger, Work, decode_work, infer_rows

WINDOW = 8192


# --- the local engine: threads in this process ------------------------------------------------------


@dataclass
class _Write:
    """A batch handed to the writer thread, and what to account for once it is committed."""

    future: cf.Future[float]
    works: list[Work]
    path_counts: list[int]  # len(w.paths) when submitted: names found later are written afterwards
    unreadable: list[tuple[str, str]]
    tagged: int
    seen: int  # paths this write records (for the progress bar)


def run_local(
    runtime: Any,
    engine: sa.Engine,
    model_id: str,
    paths: Iterable[Path],
    summary: TagSummary,
    *,
    batch_size: int = 32,
    workers: int = 2,
    ahead: int = 2,
    on_progress: Callable[[int, TagSummary], None] | None = None,
) -> None:
    """Tag ``paths`` with ``runtime`` in this process: hash/decode in ``workers`` threads, the model on
    this thread, ``ahead`` batches decoded beyond the one the model is on, and the rows written by one
    writer thread (one transaction per batch) while the model runs the next batch."""
    started = db.now()
    pending: collections.deque[tuple[list[Work], list[cf.Future[np.ndarray | None]]]] = collections.deque()
    writes: collections.deque[_Write] = collections.deque()
    batch: list[Work] = []
    done_paths: list[tuple[str, str, int]] = []
    unreadable: list[tuple[str, str]] = []
    progress = on_progress or (lambda n, s: None)

    def timed_write(*args: Any) -> float:
        t = time.perf_counter()
        write_batch(engine, model_id, *args)
        return time.perf_counter() - t

    with (
        cf.ThreadPoolExecutor(max(1, workers), thread_name_prefix="fashattr-tag") as pool,
        cf.ThreadPoolExecutor(1, thread_name_prefix="fashattr-tag-write") as writer,
        # Its own thread: the next chunk hashes while this one decodes, never queued behind the decodes.
        cf.ThreadPoolExecutor(1, thread_name_prefix="fashattr-tag-hash") as hasher,
    ):
        reader = Reader(engine, model_id, hasher, started)

        def collect(outstanding: int) -> None:
            """Account for committed writes, waiting until at most ``outstanding`` remain."""
            while writes and (len(writes) > outstanding or writes[0].future.done()):
                w8 = writes.popleft()
                t = time.perf_counter()
                summary.timings["write"] += w8.future.result()  # a failed write is fatal: raise here
                summary.timings["write_wait"] += time.perf_counter() - t
                for w, k in zip(w8.works, w8.path_counts, strict=True):
                    # Another name for these bytes, found while the batch was being written: record it later.
                    done_paths.extend((w.sha256, p, w.size) for p in w.paths[k:])
                    reader.inflight.pop(w.sha256, None)
                    if w.error:
                        summary.errors[w.error] += 1
                summary.errors.update(reason for _, reason in w8.unreadable)
                summary.tagged += w8.tagged
                progress(w8.seen, summary)

        def write(works: list[Work], records: dict[str, tuple[dict[str, Any], np.ndarray | None]]) -> None:
            args = (works, records, list(done_paths), list(unreadable))
            counts = [len(w.paths) for w in works]
            seen = sum(counts) + len(done_paths) + len(unreadable)
            writes.append(_Write(writer.submit(timed_write, *args), works, counts, args[3], len(records), seen))
            done_paths.clear()
            unreadable.clear()
            collect(1)  # one write may run beside the next model call

        def finish() -> None:
            works, futures = pending.popleft()
            t0 = time.perf_counter()
            arrays = [f.result() for f in futures]
            t1 = time.perf_counter()
            good = [i for i, a in enumerate(arrays) if a is not None]
            records: dict[str, tuple[dict[str, Any], np.ndarray | None]] = {}
            if good:
                decoded, feats = infer_rows(runtime, np.stack([arrays[i] for i in good]))  # type: ignore[misc]
                for j, i in enumerate(good):
                    records[works[i].sha256] = (decoded[j], None if feats is None else feats[j])
            summary.timings["decode_wait"] += t1 - t0
            summary.timings["model"] += time.perf_counter() - t1
            write(works, records)

        def submit(works: list[Work]) -> None:
            futures = [pool.submit(decode_work, w, runtime.image_size, runtime.fill, runtime.background) for w in works]
            pending.append((works, futures))
            while len(pending) > ahead:
                finish()

        def drain() -> None:
            """Everything decoded is inferred and committed; then the paths seen meanwhile."""
            while pending:
                finish()
            collect(0)
            if done_paths or unreadable:
                write([], {})
                collect(0)

        for plan in reader.chunks(paths):
            summary.duplicates += plan.duplicates + plan.dup_done
            summary.skipped_done += len(plan.done) - plan.dup_done
            done_paths += plan.done
            unreadable += plan.unreadable
            for w in plan.todo:
                batch.append(w)
                if len(batch) == batch_size:
                    submit(batch)
                    batch = []
            if len(done_paths) + len(unreadable) >= 4 * HASH_CHUNK:  # bounded: record the paths seen as we go
                if pending:
                    while pending:
                        finish()
                else:  # nothing to infer (a re-run): a write of paths only
                    write([], {})
        if batch:
            submit(batch)
        drain()
        summary.timings["read"] += reader.seconds
        summary.peak_in_flight = reader.peak


# --- the Ray engine ---------------------------------------------------------------------------------


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address``, or start a local Ray (once per process)."""
    import logging
    import os

    # Our progress bar and summary say what happens; Ray Data's per-operator INFO lines would bury them
    # (read when ray.data configures its loggers; a user's own setting wins).
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False


def run_ray(
    bundle: Path,
    engine: sa.Engine,
    model_id: str,
    paths: Iterable[Path],
    summary: TagSummary,
    *,
    backend: str,
    threads: int | None = None,
    batch_size: int = 32,
    workers: int = 2,
    ray_address: str | None = None,
    on_progress: Callable[[int, TagSummary], None] | None = None,
    window: int = WINDOW,
    decode: str | None = None,
) -> None:
    """Tag ``paths`` on Ray Data: ``workers`` model actors (1 CPU and ``threads`` model threads each), decoding
    with ``decode`` (None: the bundle's default)."""
    init_ray(ray_address)
    progress = on_progress or (lambda n, s: None)
    todo: list[Work] = []
    with cf.ThreadPoolExecutor(2, thread_name_prefix="fashattr-hash") as pool:
        reader = Reader(engine, model_id, pool, db.now())

        def run(window_todo: list[Work]) -> None:
            _run_window(
                window_todo,
                reader,
                str(bundle),
                backend,
                threads,
                engine,
                model_id,
                summary,
                batch_size,
                workers,
                progress,
                decode,
            )

        for plan in reader.chunks(paths):
            summary.duplicates += plan.duplicates + plan.dup_done
            summary.skipped_done += len(plan.done) - plan.dup_done
            summary.errors.update(reason for _, reason in plan.unreadable)
            if plan.done or plan.unreadable:  # paths seen again: recorded right away
                write_batch(engine, model_id, [], {}, plan.done, plan.unreadable)
                progress(len(plan.done) + len(plan.unreadable), summary)
            todo += plan.todo
            if len(todo) >= window:
                run(todo)
                todo = []
        if todo:
            run(todo)


def _run_window(
    todo: list[Work],
    reader: Reader,
    bundle: str,
    backend: str,
    threads: int | None,
    engine: sa.Engine,
    model_id: str,
    summary: TagSummary,
    batch_size: int,
    workers: int,
    progress: Callable[[int, TagSummary], None],
    decode: str | None = None,
) -> None:
    import ray

    # One block per model batch: no tiny per-image blocks to bundle, no huge block held by one actor.
    blocks = -(-len(todo) // batch_size)
    ds = ray.data.from_items([{"sha256": w.sha256, "path": w.path} for w in todo], override_num_blocks=blocks)
    out = ds.map_batches(
        Tagger,
        fn_constructor_kwargs={"bundle": bundle, "backend": backend, "threads": threads or 1, "decode": decode},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1,
        # A killed actor comes back and its batch is run again (Ray Data's actor-pool default:
        # max_restarts=-1, max_task_retries=-1; tested by killing a worker): the keyed inserts drop repeats.
    )
    for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
        works, records = [], {}
        for i, sha in enumerate(batch["sha256"]):
            w = reader.inflight.get(str(sha))
            if w is None:  # a retried batch already written
                continue
            w.width = int(batch["width"][i]) if batch["width"][i] >= 0 else None
            w.height = int(batch["height"][i]) if batch["height"][i] >= 0 else None
            w.error = str(batch["error"][i]) or None
            if batch["record"][i]:
                emb = bytes(batch["embedding"][i])
                records[w.sha256] = (json.loads(batch["record"][i]), np.frombuffer(emb, "<f4") if emb else None)
            works.append(w)
        if not works:
            continue
        write_batch(engine, model_id, works, records)
        for w in works:
            del reader.inflight[w.sha256]
            if w.error:
                summary.errors[w.error] += 1
        summary.tagged += len(records)
        progress(sum(len(w.paths) for w in works), summary)
    missing = [w.path for w in todo if w.sha256 in reader.inflight]
    if missing:
        raise RuntimeError(f"Ray returned no result for {len(missing)} image(s), e.g. {missing[0]}; run again")
