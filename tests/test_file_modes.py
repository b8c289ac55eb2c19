"""Files a run writes get the mode the umask allows (0o666 & ~umask), not mkstemp's 0o600."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import tiny_overrides

from fashattr.config import load_config
from fashattr.engine.trainer import fit
from fashattr.fileio import atomic_write, atomic_write_text, current_umask
from fashattr.predictor import predict_split


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Set the process umask for one test, and put the old one back."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], indirect=["umask"])
def test_atomic_writes_follow_the_umask(umask: int, expected: int, tmp_path: Path):
    assert current_umask() == umask
    atomic_write_text(tmp_path / "a.txt", "text")
    atomic_write(tmp_path / "b.bin", lambda tmp: tmp.write_bytes(b"\x00\x01"))

    # A writer that replaces the temp file (as some savers do) still ends with the umask's mode.
    def replace(tmp: Path) -> None:
        tmp.unlink()
        tmp.write_bytes(b"x")

    atomic_write(tmp_path / "c.bin", replace)
    assert {p.name: mode(p) for p in tmp_path.iterdir()} == {"a.txt": expected, "b.bin": expected, "c.bin": expected}
    assert current_umask() == umask  # reading it left it as it was


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o077, 0o600)], indirect=["umask"])
def test_every_output_of_a_run_follows_the_umask(
    umask: int, expected: int, tiny_data: Path, cache_dir: Path, tmp_path: Path
):
    run = fit(load_config(None, tiny_overrides(tiny_data, cache_dir, tmp_path, name="run", **{"train.epochs": 1})))
    prediction = tmp_path / "prediction.txt"
    assert predict_split(run, "test", prediction) == 20
    outputs = ["best.safetensors", "last.safetensors", "checkpoint.pt", "metrics.csv", "summary.json"]
    files = [run / name for name in outputs] + [prediction]
    assert {p.name: mode(p) for p in files} == {p.name: expected for p in files}
    # Nothing else in the run folder is left at another mode (or as a stray temp file).
    assert {p.name: mode(p) for p in run.iterdir() if p.is_file()} == {
        p.name: expected for p in run.iterdir() if p.is_file()
    }
