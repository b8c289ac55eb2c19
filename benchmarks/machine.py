"""What machine a benchmark ran on, in the words its results record."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_generation() -> str:
    """``"family F model M, AVX-512"`` from ``/proc/cpuinfo``: a virtual machine's model name ("AMD EPYC") often
    hides which generation it is, and training speed differs about fourfold between those seen here."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if not line.strip():
                break  # the first processor is enough
    except OSError:
        return ""
    if "cpu family" not in fields:
        return ""
    isa = "AVX-512" if "avx512f" in fields.get("flags", "").split() else "no AVX-512"
    return f"family {fields['cpu family']} model {fields.get('model', '?')}, {isa}"


def machine_line() -> str:
    """``"<cpu> (<generation>), <n> cores, Python <version>"``."""
    generation = cpu_generation()
    cpu = f"{cpu_name()} ({generation})" if generation else cpu_name()
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
