"""benchmarks/cpu_best.py adopts a finished run only when it is exactly the recipe with that seed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from conftest import load_benchmark

from fashattr.config import load_config, save_config

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "recipes" / "cpu_best.yaml"


@pytest.fixture(scope="module")
def cpu_best() -> ModuleType:
    return load_benchmark("cpu_best")


def _run(tmp_path: Path, overrides: list[str], finished: bool = True) -> Path:
    """A run folder whose config.yaml is the recipe with ``overrides``, the way `fashattr train` saves it."""
    run = tmp_path / "run"
    run.mkdir()
    save_config(load_config(RECIPE, overrides), run / "config.yaml")
    if finished:
        (run / "summary.json").write_text('{"wall_s": 3100.0}')
    return run


def test_a_run_of_the_recipe_with_that_seed_is_adopted(cpu_best: ModuleType, tmp_path: Path) -> None:
    # The ablation's rows carry another name, folder and recipe label: those may differ.
    run = _run(tmp_path, ["train.seed=11", "name=teacher-seed-11-s0", "out_dir=runs/ablation", "recipe=ablation"])
    cpu_best.same_config(RECIPE, 11, run)


def test_a_run_that_only_hid_its_progress_bar_is_adopted(cpu_best: ModuleType, tmp_path: Path) -> None:
    run = _run(tmp_path, ["train.seed=0", "train.progress=false"])
    cpu_best.same_config(RECIPE, 0, run)


@pytest.mark.parametrize(
    ("overrides", "seed", "message"),
    [
        (["train.seed=11"], 12, "train.seed 11 != 12"),
        (["train.seed=0", "train.epochs=20"], 0, "train.epochs 20 != 36"),
        (["train.seed=0", "data.image_size=112"], 0, "data.image_size 112 != 160"),
    ],
)
def test_another_config_is_refused_naming_the_key(
    cpu_best: ModuleType, tmp_path: Path, overrides: list[str], seed: int, message: str
) -> None:
    run = _run(tmp_path, overrides)
    with pytest.raises(SystemExit, match=f"not this recipe; {message}"):
        cpu_best.same_config(RECIPE, seed, run)


def test_an_unfinished_run_is_refused(cpu_best: ModuleType, tmp_path: Path) -> None:
    run = _run(tmp_path, ["train.seed=0"], finished=False)
    with pytest.raises(SystemExit, match="not a finished run"):
        cpu_best.same_config(RECIPE, 0, run)


def test_the_recipe_is_the_ablation_row_it_names(tmp_path: Path) -> None:
    # cpu_best.yaml says it is the ablation's "resnet10t, 160 px, 36 epochs" row: the row's overrides as the
    # ablation plans them (cpu_resnet18 + EMA 0.998 + 20 epochs, then resnet10t for 28, then 160 px, then 36 epochs).
    ablation = load_benchmark("accuracy_ablation")
    spec = yaml.safe_load((ROOT / "benchmarks" / "accuracy_ablation.yaml").read_text())
    rows = {r["name"]: r for r in ablation.plan(spec, [])}
    overrides = rows["resnet10t, 160 px, 36 epochs"]["overrides"]
    assert overrides[-4:] == ["model.backbone=resnet10t", "train.epochs=28", "data.image_size=160", "train.epochs=36"]
    row = load_config(ROOT / spec["base"], overrides)
    best = load_config(RECIPE)
    assert {**dataclasses.asdict(row), "recipe": None} == {**dataclasses.asdict(best), "recipe": None}


def test_adopt_items_are_parsed_and_a_malformed_one_is_named(cpu_best: ModuleType) -> None:
    assert cpu_best.parse_adopt(["0=runs/a", "11=runs/b=c"]) == {0: Path("runs/a"), 11: Path("runs/b=c")}
    for bad in ["runs/a", "x=runs/a", "0="]:
        with pytest.raises(SystemExit, match=f"--adopt '{bad}': expected SEED=RUN"):
            cpu_best.parse_adopt([bad])
