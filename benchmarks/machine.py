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


def machine_line() -> str:
    """``"<cpu>, <n> cores, Python <version>"``."""
    return f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}"
