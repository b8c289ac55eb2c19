"""`fashattr serve` in a subprocess on a free loopback port, for the tests that need the real command."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from pg_cluster import free_port


@contextlib.contextmanager
def serving(model: Path, *args: str, ready_s: float = 90) -> Iterator[str]:
    """``fashattr serve MODEL ARGS`` on a free loopback port: its URL once /readyz answers 200; stopped after."""
    port = free_port()
    cmd = [sys.executable, "-m", "fashattr", "serve", str(model), "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"fashattr serve exited with {proc.returncode}: {proc.stdout.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"fashattr serve did not become ready within {ready_s:.0f} s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)
