"""A data.root that does not exist is said to be so, by every reader and by `data check`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fashattr.data.formats import create_reader, reader_names
from fashattr.errors import DatasetError


@pytest.mark.parametrize("fmt", reader_names())
def test_every_reader_says_the_root_does_not_exist(fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    gone = tmp_path / "nope"
    with pytest.raises(DatasetError) as e:
        create_reader(fmt, gone)
    assert str(e.value) == f"data root {gone} does not exist" and e.value.file == str(gone)
    monkeypatch.chdir(tmp_path)  # a relative root is named as given, with the folder it is relative to
    with pytest.raises(DatasetError) as e:
        create_reader(fmt, "nope/data.csv")
    assert str(e.value) == f"data root nope/data.csv does not exist (relative to {tmp_path})"


def test_data_check_says_the_root_does_not_exist(tmp_path: Path):
    gone = tmp_path / "nope"
    for fmt in ("ai6126", "fashionhow"):
        r = subprocess.run(
            [sys.executable, "-m", "fashattr", "data", "check", str(gone), "--format", fmt, "--out", "audit"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert r.returncode == 2 and r.stderr == f"error: data root {gone} does not exist\n", r.stderr
        assert not (tmp_path / "audit").exists()  # nothing written for a dataset that is not there
