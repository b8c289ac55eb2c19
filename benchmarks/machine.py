"""What machine a benchmark ran on, in the words its results record."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def first_cpu() -> dict[str, str]:
    """The first processor's fields in ``/proc/cpuinfo`` (empty where there is none, e.g. macOS)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor is enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_name(cpu: dict[str, str] | None = None) -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    cpu = first_cpu() if cpu is None else cpu
    return cpu.get("model name") or platform.processor() or "unknown"


def cpu_generation(cpu: dict[str, str] | None = None) -> str:
    """``"family F model M, AVX-512"``: a virtual machine's model name ("AMD EPYC") often hides which generation
    it is, and training speed differs about fourfold between those seen here. Empty without a family (aarch64)."""
    cpu = first_cpu() if cpu is None else cpu
    if "cpu family" not in cpu:
        return ""
    isa = "AVX-512" if "avx512f" in cpu.get("flags", "").split() else "no AVX-512"
    return f"family {cpu['cpu family']} model {cpu.get('model', '?')}, {isa}"


def gpu_name() -> str:
    """The CUDA device that ``train.device=auto`` would use, or ``""`` (no torch, no GPU): a result measured there
    must not read as this CPU's."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return ""
    try:
        import torch
    except ImportError:
        return ""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""


def machine_line() -> str:
    """``"<cpu> (<generation>), <n> cores[, GPU <name>], Python <version>"``."""
    cpu = first_cpu()
    generation = cpu_generation(cpu)
    name = f"{cpu_name(cpu)} ({generation})" if generation else cpu_name(cpu)
    gpu = gpu_name()
    gpu = f", GPU {gpu}" if gpu else ""
    return f"{name}, {os.cpu_count()} cores{gpu}, Python {platform.python_version()}"
