"""The library as users install it: a wheel, installed into a fresh environment, used from elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import fashattr
from fashattr.cli import recipe_names, resolve_config
from fashattr.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.stem for p in (ROOT / "src" / "fashattr" / "recipes").glob("*.yaml"))


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the source (the checkout gets no build/ folder)."""
    tmp = tmp_path_factory.mktemp("wheel")
    tree = tmp / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # No build isolation: the build uses this environment's setuptools (no network needed).
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp), "."]
    result = run(cmd, cwd=tree)
    assert result.returncode == 0, result.stderr
    (built,) = tmp.glob("fashattr-*.whl")
    return built


def test_wheel_ships_recipes_types_license_and_ranges(wheel: Path):
    version = fashattr.__version__
    assert wheel.name == f"fashattr-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(f"fashattr-{version}.dist-info/METADATA").decode()
    assert RECIPES and {f"fashattr/recipes/{r}.yaml" for r in RECIPES} <= names
    assert "fashattr/py.typed" in names
    assert f"fashattr-{version}.dist-info/licenses/LICENSE" in names
    assert f"\nVersion: {version}\n" in metadata
    assert "\nLicense-Expression: MIT\n" in metadata
    assert "\nRequires-Dist: torch<3,>=2.4\n" in metadata  # a range, not an exact pin


def test_wheel_installed_elsewhere_finds_its_recipes(wheel: Path, tmp_path: Path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index"]
    result = run([*install, str(wheel)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # The dependencies come from this environment; the package itself only from the wheel (a
    # .pth line adds a folder to sys.path without running the editable install's own .pth).
    purelib = Path(
        run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).stdout.strip()
    )
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"FASHATTR_CACHE": str(tmp_path / "cache")}

    where = run([str(python), "-c", "import fashattr; print(fashattr.__file__)"], elsewhere, env)
    assert where.stdout.strip() == str(purelib / "fashattr" / "__init__.py"), where.stderr
    # A recipe by name resolves inside the installed package.
    found = run([str(python), "-c", "from fashattr.cli import resolve_config as r; print(r('cpu_quick'))"], elsewhere)
    assert found.stdout.strip() == str(purelib / "fashattr" / "recipes" / "cpu_quick.yaml"), found.stderr
    # `python -m fashattr demo` (its recipe found by name) runs end to end where there is no source tree.
    demo = [
        str(python), "-m", "fashattr", "demo", "--n", "60", "--out", "demo", "model.backbone=test_resnet",
        "data.image_size=32", "train.epochs=1", "train.batch_size=16", "train.progress=false", "train.threads=1",
        "data.workers=1",
    ]  # fmt: skip
    result = run(demo, elsewhere, env)
    assert result.returncode == 0, result.stderr[-3000:]
    config = (elsewhere / "demo" / "run" / "config.yaml").read_text()
    assert "recipe: demo_synthetic (resnet10t at 64 px on synthetic garments)\n" in config
    assert (elsewhere / "demo" / "run" / "prediction.txt").is_file()


def test_recipes_by_name_by_path_and_with_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert recipe_names() == RECIPES
    packaged = Path(fashattr.__file__).parent / "recipes" / "cpu_quick.yaml"
    assert resolve_config("cpu_quick") == packaged
    assert resolve_config("cpu_quick.yaml") == packaged
    assert resolve_config("recipe:cpu_quick") == packaged
    assert resolve_config("configs/recipes/cpu_quick.yaml") == Path("configs/recipes/cpu_quick.yaml")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cpu_quick").write_text("train:\n  epochs: 1\n")
    assert resolve_config("cpu_quick") == Path("cpu_quick")  # a file of that name wins ...
    assert resolve_config("recipe:cpu_quick") == packaged  # ... unless the prefix says recipe


def test_unknown_recipe_names_the_close_one_or_all():
    with pytest.raises(ConfigError) as e:
        resolve_config("cpu_quik")
    assert str(e.value) == (
        "config file cpu_quik not found, and no recipe is named 'cpu_quik'; did you mean 'cpu_quick'?"
    )
    with pytest.raises(ConfigError) as e:
        resolve_config("recipe:zzz")
    assert str(e.value) == f"no recipe is named 'zzz'; the recipes are: {', '.join(RECIPES)}."


def test_no_source_tree_lookups_in_the_package():
    # parents[N] from a module's own file reaches outside the package once installed.
    offenders = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in (ROOT / "src" / "fashattr").rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if "__file__" in line and "parents[" in line
    ]
    assert offenders == []
