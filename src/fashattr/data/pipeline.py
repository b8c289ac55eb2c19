"""Training batches ready for the model: gather -> device -> augment, prepared ahead in a thread.

Preparing batch k+1 while the model trains on batch k hides the input pipeline behind
compute. Determinism is kept: one producer prepares batches in order, and each batch
carries the augmentation generator's state *after* it, which is what a checkpoint taken
after that batch must save, however far ahead the producer has run.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import torch

from fashattr.data.augment import BatchAugment
from fashattr.data.loader import BatchLoader

Prepared = tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]


def augmented_batches(
    loader: BatchLoader,
    augment: BatchAugment,
    gen: torch.Generator,
    device: torch.device,
    epoch: int,
    start: int = 0,
    channels_last: bool = True,
) -> Iterator[Prepared]:
    """``(x, targets, generator state after this batch)`` for the steps of ``epoch`` from ``start``,
    with ``x`` in the model's memory format (converted here, off the training thread)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    pin = device.type == "cuda"
    for pixels, targets in loader.batches(epoch, start):
        if pin:
            pixels = pixels.pin_memory()
        y = {g: v.to(device, non_blocking=True) for g, v in targets.items()}
        x, y = augment(pixels.to(device, non_blocking=True), y, gen)
        yield x.contiguous(memory_format=fmt), y, gen.get_state()


_DONE = object()


class Prefetcher:
    """Iterates ``source`` in a background thread, ``depth`` items ahead; 0 = in the caller's thread.

    Exceptions raised by ``source`` are re-raised in the consumer. ``close()`` (also called
    when iteration ends) stops the producer and waits for it.
    """

    def __init__(self, source: Iterator[Any], depth: int = 2) -> None:
        self.source, self.depth = source, depth
        self._stop = threading.Event()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(depth, 1))
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._thread = threading.Thread(target=self._produce, name="fashattr-prefetch", daemon=True)
            self._thread.start()

    def _produce(self) -> None:
        # One intra-op thread here (the setting is per thread): the producer fills the cycles
        # the model leaves idle instead of fighting its OpenMP team for the same cores.
        torch.set_num_threads(1)
        try:
            for item in self.source:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._queue.put(_DONE)
        except BaseException as e:  # handed to the consumer, raised there
            self._queue.put(e)

    def __iter__(self) -> Iterator[Any]:
        if self._thread is None:
            yield from self.source
            return
        try:
            while True:
                item = self._queue.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        while self._thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.05)
        self._thread = None
