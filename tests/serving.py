"""`fashattr serve` in a subprocess on a free loopback port, for the tests that need the real command; and the
external servers other tests drive (MLflow, Label Studio), started the same way."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def require_tool(path: Path, what: str, installer: str) -> None:
    """Skip (fail under CI=true) when an external server the tests drive is not installed at ``path``."""
    import pytest
    from conftest import in_ci

    if not path.is_file():
        reason = f"no {what} at {path} ({installer} installs it; make test runs it)"
        if in_ci():
            pytest.fail(f"{what} tests cannot run under CI: {reason}")
        pytest.skip(reason)


@contextlib.contextmanager
def external_server(
    cmd: list[str], health_url: str, log_path: Path, ready_s: float = 120, **popen: Any
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd`` (its output to ``log_path``), wait until ``health_url`` answers 200, stop it after.

    Raises:
        RuntimeError: the process exited or did not answer within ``ready_s``; with the log's tail.
    """
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, **popen)
        try:
            deadline = time.monotonic() + ready_s
            while True:
                try:
                    if httpx.get(health_url, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{cmd[0]} did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)
