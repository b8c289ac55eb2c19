"""The documentation site: it builds with --strict, its configuration reference covers every key, and the
build fails on what it must catch (a broken link, a missing anchor, a page left out of the navigation)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from fashattr.config import Config

ROOT = Path(__file__).resolve().parent.parent
MKDOCS = Path(sys.executable).parent / "mkdocs"


def mkdocs_build(project: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [str(MKDOCS), "build", "--strict", "--site-dir", str(site)]
    return subprocess.run(cmd, cwd=project, capture_output=True, text=True, env=env, timeout=300)


def hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "docs" / "hooks" / "config_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_site_builds_strict(tmp_path: Path):
    result = mkdocs_build(ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / "site" / "reference" / "config" / "index.html").read_text()
    assert "train.epochs" in page and "model.pretrained" in page
    assert (tmp_path / "site" / "architecture" / "index.html").is_file()


def test_config_reference_lists_every_key_with_its_default_and_meaning():
    text = hook().reference_markdown()
    rows = {line.split("|")[1].strip().strip("`"): line for line in text.splitlines() if line.startswith("| `")}
    expected = []
    for section in dataclasses.fields(Config):
        default = section.default_factory() if section.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            expected += [(f"{section.name}.{f.name}", f) for f in dataclasses.fields(default)]
        else:
            expected.append((section.name, section))
    assert sorted(rows) == sorted(name for name, _ in expected)
    for name, _ in expected:
        cells = [c.strip() for c in rows[name].split("|")[1:-1]]
        assert cells[3], f"{name} has no comment in src/fashattr/config/sections.py to explain it"
    assert "| `train.epochs` | `int` | `10` |" in text
    assert "| `data.on_bad_image` | `Literal['error', 'skip']` | `\"error\"` |" in text
    assert "| `data.eval_split` | `str \\| None` | `null` |" in text  # a pipe inside a cell is escaped


@pytest.mark.parametrize(
    "page, nav, message",
    [
        ("See [nowhere](nowhere.md).\n", True, "nowhere.md"),
        ("See [the layers](architecture.md#no-such-section).\n", True, "no-such-section"),
        ("A page nobody can reach.\n", False, "extra.md"),
    ],
)
def test_strict_build_fails_on(tmp_path: Path, page: str, nav: bool, message: str):
    project = tmp_path / "project"
    shutil.copytree(ROOT / "docs", project / "docs")
    config = (ROOT / "mkdocs.yml").read_text()
    if nav:
        config = config.replace(
            "  - Development: development.md\n", "  - Development: development.md\n  - Extra: extra.md\n"
        )
    (project / "mkdocs.yml").write_text(config)
    (project / "docs" / "extra.md").write_text("# Extra\n\n" + page)
    result = mkdocs_build(project, tmp_path / "site")
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "Aborted with 1 warnings in strict mode" in out
    assert message in out


def test_readme_is_a_landing_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    snippet = readme.split("<!-- predictor-snippet -->")[1].split("```")[1]
    assert snippet in (ROOT / "docs" / "python.md").read_text()  # the docs site shows the same, tested, code
