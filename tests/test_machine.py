"""benchmarks/machine.py names the CPU generation, which a virtual machine's model name often hides."""

from __future__ import annotations

import platform
import re
from pathlib import Path

import pytest
from conftest import load_benchmark


def _first_cpu() -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="Linux only: /proc/cpuinfo")
def test_the_machine_line_carries_family_model_and_avx512() -> None:
    machine = load_benchmark("machine")
    cpu = _first_cpu()
    line = machine.machine_line()
    assert line.startswith(machine.cpu_name()) and line.endswith(" cores, Python " + platform.python_version())
    if "cpu family" in cpu:  # x86: "AMD EPYC (family 26 model 2, AVX-512), 2 cores, Python 3.11.7"
        isa = "AVX-512" if "avx512f" in cpu["flags"].split() else "no AVX-512"
        assert f"(family {cpu['cpu family']} model {cpu['model']}, {isa})" in line
    else:  # no family to name (aarch64): the line is the model name alone
        assert not re.search(r"\(family ", line)
