"""Micro-batching: images from concurrent requests gathered into one model call, off the event loop.

Requests put one item per image on a bounded asyncio queue and await a future. One worker task takes
the first item, then keeps taking items until ``max_batch`` are in hand or ``max_wait_ms`` has passed
since the first, stacks them and runs the model in a single-thread executor (the event loop keeps
accepting, parsing and answering while the model runs; one model thread because the backends already
use every core for one batch). Items that arrive while the model runs wait in the queue, so under load
batches fill up by themselves and the wait only costs latency when the server is idle.

Admission is counted in images (``admit``/``release``): a request is refused (503) before its body is
read once ``queue_size`` images are in flight, so memory stays bounded however fast requests come, or
once the images in flight would take longer than ``max_queue_ms`` to get through the model at the
measured rate, so what is admitted is answered in time even when the CPU is slower than expected
(shared with other work, throttled): an overloaded server refuses the excess at once instead of
building a backlog it needs seconds to drain.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from fashattr.serve.metrics import ServeMetrics

log = logging.getLogger("fashattr.serve")
T = TypeVar("T")
Logits = dict[str, np.ndarray]


def lowered_priority(nice: int) -> Callable[[], None]:
    """A thread initializer that raises the calling thread's nice value to ``nice`` (Linux: per thread).

    The model and decode threads run below the event loop's priority, so when the CPU is saturated the
    loop still accepts, parses and refuses (503) at once instead of queueing connections in the kernel;
    threads that onnxruntime starts from a lowered thread inherit its nice value. Lowering one's own
    priority needs no privilege; where it is not supported the thread keeps the default, and says so.
    """

    def init() -> None:
        if nice <= 0 or not hasattr(os, "setpriority"):
            return
        try:
            tid = threading.get_native_id()
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:  # only ever lower it (a niced server stays niced)
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError as e:
            log.warning(
                "could not lower the priority of thread %s to nice %d: %s", threading.current_thread().name, nice, e
            )

    return init


class Overloaded(Exception):
    """The admission limit is reached: answer 503 with Retry-After."""


@dataclass
class _Item:
    pixels: np.ndarray
    future: asyncio.Future[Logits]


class Batcher:
    """Gathers single images into model batches.

    Args:
        fn: the model: ``(N, S, S, 3)`` uint8 -> ``{group: (N, C) logits}`` (``Runtime.logits``).
        max_batch: most images per call.
        max_wait_ms: longest wait for more images once one is queued.
        queue_size: most images admitted at once.
        metrics: where batch sizes, model time and queue length go.
        nice: the model thread's nice value (see :func:`lowered_priority`; 0 keeps the default).
        max_queue_ms: refuse a request whose images would wait longer than this for the model,
            estimated from the measured model time per image (0: only ``queue_size`` limits).
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray], Logits],
        max_batch: int,
        max_wait_ms: float,
        queue_size: int,
        metrics: ServeMetrics,
        nice: int = 0,
        max_queue_ms: float = 0.0,
    ) -> None:
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.capacity = queue_size
        self.metrics = metrics
        self.max_delay = max_queue_ms / 1000.0
        self.per_image: float | None = None  # seconds of model time per image in a well-filled batch
        self.in_flight = 0
        self.batches = 0
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task[None] | None = None
        self.executor = cf.ThreadPoolExecutor(1, "fashattr-model", initializer=lowered_priority(nice))

    # --- admission ---------------------------------------------------------------------------

    def admit(self, n: int = 1) -> None:
        """Reserve ``n`` image slots or raise :class:`Overloaded` (runs on the event loop: no race)."""
        if self.in_flight + n > self.capacity:
            self.metrics.rejected.labels("queue_full").inc()
            raise Overloaded(f"{self.in_flight} images in flight (limit {self.capacity})")
        wait = self.expected_wait()
        if self.max_delay and wait > self.max_delay:
            self.metrics.rejected.labels("queue_delay").inc()
            raise Overloaded(
                f"{self.in_flight} images in flight, about {wait * 1000:.0f} ms of model time "
                f"(limit {self.max_delay * 1000:g} ms)"
            )
        self.in_flight += n
        self.metrics.in_flight.set(self.in_flight)

    def expected_wait(self) -> float:
        """Seconds of model time queued ahead of a new request (0 before any measurement): an idle
        server admits a request however slow the model, a busy one refuses what would wait too long."""
        return 0.0 if self.per_image is None else self.in_flight * self.per_image

    def observe(self, images: int, seconds: float) -> None:
        """Update the model-time-per-image estimate from a batch of ``images`` that took ``seconds``.

        Only batches at least half full count: those are what the model runs when a queue builds up (the
        case admission is about); one-image batches of an idle server cost more per image and would make
        admission refuse too early. The estimate follows the machine (exponential average, weight 0.2).
        """
        if images < max(1, self.max_batch // 2):
            return
        sample = seconds / images
        self.per_image = sample if self.per_image is None else 0.8 * self.per_image + 0.2 * sample

    def release(self, n: int = 1) -> None:
        self.in_flight -= n
        self.metrics.in_flight.set(self.in_flight)

    # --- running -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker task on the running event loop."""
        self._queue = asyncio.Queue(maxsize=self.capacity)
        self._task = asyncio.get_running_loop().create_task(self._worker(), name="fashattr-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, pixels: np.ndarray) -> Logits:
        """Logits of one ``(S, S, 3)`` image, computed in a batch with whatever else is queued."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        future: asyncio.Future[Logits] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Item(pixels, future))
        except asyncio.QueueFull:  # admission keeps this from happening; never wait for room
            raise Overloaded("the model queue is full") from None
        self.metrics.queue_length.set(self._queue.qsize())
        return await future

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the model thread, between batches (Grad-CAM, warm-up)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _gather(self, queue: asyncio.Queue[_Item]) -> list[_Item]:
        loop = asyncio.get_running_loop()
        batch = [await queue.get()]
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                batch.append(queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                # Queue.get leaves the item queued if the timeout cancels it: nothing is lost.
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        self.metrics.queue_length.set(queue.qsize())
        return [it for it in batch if not it.future.done()]  # timed-out requests cancelled theirs

    async def _worker(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            live = await self._gather(self._queue)
            if not live:
                continue
            start = time.perf_counter()
            try:
                logits = await loop.run_in_executor(self.executor, self.fn, np.stack([it.pixels for it in live]))
            except Exception as e:  # the model failed: every waiting request learns it, the worker goes on
                log.exception("model call on %d images failed", len(live))
                for it in live:
                    if not it.future.done():
                        it.future.set_exception(e)
                continue
            self.batches += 1
            elapsed = time.perf_counter() - start
            self.observe(len(live), elapsed)
            self.metrics.observe_batch(len(live), elapsed)
            for i, it in enumerate(live):
                if not it.future.done():
                    it.future.set_result({g: v[i : i + 1] for g, v in logits.items()})
