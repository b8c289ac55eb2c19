"""CPU memory allocation settings for training and inference processes (stdlib only, no torch import)."""

from __future__ import annotations

import os
import sys

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -2, -3, -4
_ALLOCATOR_TUNED = False


def keep_freed_memory() -> bool:
    """Let glibc keep freed CPU memory for reuse instead of returning it to the kernel at every free.

    PyTorch's CPU tensors come from plain malloc. By default glibc serves large blocks with fresh
    mmap() calls, unmaps them on free and trims the heap after large frees, so every training step
    and every inference batch faults its activations in again, page by page: on 2 cores,
    EfficientNet-Lite2 at 260 px, batch 64, spent more CPU time in the kernel than in the model
    (benchmarks/pretrained_speed.py). Serving every block from the heap (no mmap) and never trimming
    it keeps the memory warm for the next step; the process's resident memory then stays at its
    peak. (glibc still falls back to the main heap when a thread's arena cannot grow.) Returns
    whether the settings were applied (glibc on Linux only; elsewhere a no-op).
    ``FASHATTR_MALLOC=default`` leaves malloc alone.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if os.environ.get("FASHATTR_MALLOC") == "default" or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False
    ok = mallopt(_M_MMAP_MAX, 0) and mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
    ok = ok and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) and mallopt(_M_TOP_PAD, 1 << 30)
    _ALLOCATOR_TUNED = bool(ok)
    return _ALLOCATOR_TUNED
