"""CPU memory allocation settings for training and inference processes (stdlib only, no torch import)."""

from __future__ import annotations

import os
import sys

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_ALLOCATOR_TUNED = False


def keep_freed_memory() -> bool:
    """Let glibc keep freed CPU memory for reuse instead of returning it to the kernel at every free.

    PyTorch's CPU tensors come from plain malloc. By default glibc serves blocks over a dynamic
    threshold with fresh mmap() calls and trims the heap after large frees, so every training step
    faults its activations in again, page by page: on 2 cores, EfficientNet-Lite0 at 192 px spent
    a quarter of its time in the kernel (benchmarks/backbones.py, "+sysmalloc" rows). Raising the
    mmap threshold to glibc's ceiling (32 MiB) and never trimming keeps the heap warm; the
    process's resident memory then stays at its peak. Returns whether the settings were applied
    (glibc on Linux only; elsewhere a no-op). ``FASHATTR_MALLOC=default`` leaves malloc alone.
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
    ok = mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    ok = ok and mallopt(_M_TOP_PAD, 1 << 30)
    _ALLOCATOR_TUNED = bool(ok)
    return _ALLOCATOR_TUNED
