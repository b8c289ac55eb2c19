"""fashattr.memory: glibc keeps freed tensor memory for the next step instead of faulting it in again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Allocate, touch and free a 64 MB tensor, as a training step does with its activations: after ten rounds
# of warm-up, count the minor page faults of the next 20.
PROBE = """
import json, resource, sys
from fashattr.memory import keep_freed_memory
tuned = keep_freed_memory()
import torch
def step():
    x = torch.empty(16 * 1024 * 1024)  # 64 MB, written then freed
    x.fill_(1.0)
    del x
for _ in range(10):  # warm-up: glibc's heap grows until a freed block is big enough for the aligned request
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(json.dumps({"tuned": tuned, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def faults(malloc: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "FASHATTR_MALLOC"}
    if malloc:
        env["FASHATTR_MALLOC"] = malloc
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_tensors_are_reused_without_page_faults():
    default, tuned = faults("default"), faults(None)
    assert default["tuned"] is False and tuned["tuned"] is True
    # glibc's default: every round maps 64 MB afresh, 16,384 pages of 4 KiB faulted in each time
    assert default["faults"] >= 20 * 16_000, default
    # kept: the heap already holds the pages (its warm-up, a few rounds of growth, is over)
    assert tuned["faults"] < 16_000, (tuned, default)
