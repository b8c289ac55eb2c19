"""benchmarks/machine.py names the CPU generation, which a virtual machine's model name often hides."""

from __future__ import annotations

import os
import platform

from conftest import load_benchmark

ZEN5 = {"model name": "AMD EPYC", "cpu family": "26", "model": "2", "flags": "fpu sse2 avx2 avx512f avx512_bf16"}
ZEN1 = {"model name": "AMD EPYC", "cpu family": "23", "model": "1", "flags": "fpu sse2 avx2 fma"}
ARM = {"processor": "0", "BogoMIPS": "50.00", "Features": "fp asimd"}


def test_family_model_and_avx512_are_named() -> None:
    machine = load_benchmark("machine")
    assert machine.cpu_generation(ZEN5) == "family 26 model 2, AVX-512"
    assert machine.cpu_generation(ZEN1) == "family 23 model 1, no AVX-512"
    assert machine.cpu_generation(ARM) == ""  # no family to name
    assert machine.cpu_name(ZEN1) == "AMD EPYC"


def test_the_machine_line_is_this_machines() -> None:
    machine = load_benchmark("machine")
    cpu = machine.first_cpu()
    generation = machine.cpu_generation(cpu)
    name = f"{machine.cpu_name(cpu)} ({generation})" if generation else machine.cpu_name(cpu)
    assert machine.machine_line() == f"{name}, {os.cpu_count()} cores, Python {platform.python_version()}"
