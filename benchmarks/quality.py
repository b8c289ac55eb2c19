"""Every recipe from scratch on the real FashionDataset under one equal CPU budget.

Each recipe in ``configs/recipes/`` is trained in its own process with the same overrides:
``data.image_size`` (``--size``, default 64 px), ``train.epochs`` (``--epochs``, default 5),
``model.pretrained=false`` (no hub access here), the same thread count, and epoch-valued
schedule settings (``sched.warmup_epochs``, ``step_epochs``, ``restart_epochs``) scaled by
``epochs / the recipe's epochs`` so every schedule keeps its shape. Everything else (model,
head, loss, optimizer, augmentations, batch size, freezing, model selection) is the recipe's.
Each run selects its best epoch on the stratified 10% selection holdout of train as its recipe
says, and is then measured once on the recipes' fixed 10% *test holdout* (``data.test_holdout``),
which neither training nor selection saw: that is the column to compare; the selection
holdout's number is kept beside it to show how much choosing the epoch on it flatters.
The table is written to ``benchmarks/results/quality.{json,md}``.

    python benchmarks/quality.py                       # every recipe, 64 px, 5 epochs
    python benchmarks/quality.py --recipes cpu_resnet18 eva02_tiny_ls --epochs 2
    python benchmarks/quality.py --threads 1 --parallel 2   # two recipes at a time, 1 thread each
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = [
    "cpu_resnet18",
    "vit_b16_weighted_bce",
    "seresnet50_focal",
    "resnet50_frozen_mlp",
    "eva02_tiny_ls",
    "resnet34_fine_tune",
    "gpu_pretrained",
]
SCALED = ("warmup_epochs", "step_epochs", "restart_epochs")


def overrides(recipe: Path, size: int, epochs: int, threads: int, out: Path) -> list[str]:
    """The budget's overrides for one recipe."""
    cfg = yaml.safe_load(recipe.read_text())
    scale = epochs / cfg.get("train", {}).get("epochs", 10)
    over = [
        f"data.image_size={size}",
        f"train.epochs={epochs}",
        "model.pretrained=false",
        f"train.threads={threads}",
        "train.device=cpu",
        "train.progress=false",
        f"out_dir={out}",
        f"name={recipe.stem}",
    ]
    for key in SCALED:
        value = cfg.get("sched", {}).get(key)
        if value is not None:
            over.append(f"sched.{key}={value * scale:.4g}")
    return over


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=RECIPES)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--parallel", type=int, default=1, help="recipes trained at the same time")
    p.add_argument("--out", default=str(ROOT / "runs" / "quality"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()
    out = Path(args.out)
    rows: list[dict] = []
    # --parallel N runs N recipes at a time (each with --threads): on 2 cores, two 1-thread
    # trainings get more done than one 2-thread training, which waits at every op's barrier.
    with ThreadPoolExecutor(args.parallel) as pool:
        for row in pool.map(lambda name: run_recipe(name, args, out), args.recipes):
            rows.append(row)
            write(rows, args)  # after every recipe, so a long table survives an interruption


def run_recipe(name: str, args: argparse.Namespace, out: Path) -> dict:
    """Train one recipe under the budget in its own process; its table row."""
    recipe = ROOT / "configs" / "recipes" / f"{name}.yaml"
    over = overrides(recipe, args.size, args.epochs, args.threads, out)
    cmd = [sys.executable, "-m", "fashattr", "train", str(recipe), *over]
    print("$", " ".join(cmd[1:]), file=sys.stderr, flush=True)
    start = time.perf_counter()
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        raise SystemExit(f"recipe {name} failed; see {out / name / 'train.log'}")
    wall = time.perf_counter() - start
    summary = json.loads((out / name / "summary.json").read_text())
    best = summary["best"]
    test = summary.get("test_holdout")
    if test is None:
        raise SystemExit(f"recipe {name} has no test holdout (data.test_holdout: 0); the table needs one")
    row = {
        "recipe": name,
        "backbone": yaml.safe_load(recipe.read_text())["model"]["backbone"],
        "avg_class_acc": round(test["avg_class_acc"], 4),
        "overall_acc": round(test["overall_acc"], 4),
        "selection_avg_class_acc": round(best["avg_class_acc"], 4),
        "selection_overall_acc": round(best["overall_acc"], 4),
        "test_images": summary["test_holdout_images"],
        "best_epoch": summary["best_epoch"],
        "epochs_run": summary["epochs_run"],
        "parameters_m": round(summary["parameters"] / 1e6, 2),
        "train_s": summary["wall_s"],
        "process_s": round(wall, 1),
        "parallel": args.parallel,
        "overrides": over,
    }
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def write(rows: list[dict], args: argparse.Namespace) -> None:
    """Merge ``rows`` into ``quality.json`` (same size and epochs; a recipe run again replaces
    its row) and rewrite ``quality.md`` from it."""
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    path = results / "quality.json"
    budget = {"size": args.size, "epochs": args.epochs, "threads": args.threads, "parallel": args.parallel}
    old = json.loads(path.read_text()) if path.exists() else {}
    # Rows from before the test holdout existed measured something else: never merged.
    same = {k: old.get(k) for k in budget} == budget
    kept = [r for r in old.get("runs", []) if same and "selection_avg_class_acc" in r]
    merged = {r["recipe"]: r for r in kept} | {r["recipe"]: r for r in rows}
    table = sorted(merged.values(), key=lambda r: -r["avg_class_acc"])
    path.write_text(json.dumps({**budget, "runs": table}, indent=2) + "\n")
    lines = [
        f"{args.size} px, {args.epochs} epochs, {args.threads} thread(s) per run, {args.parallel} run(s) at a time,"
        " from scratch;"
        " test holdout = fixed stratified 10% of train (never trained on or selected on);"
        " selection holdout = stratified 10% of the rest (picks the epoch, so its number is optimistic)",
        "",
        "| recipe | backbone | test avg per-class acc | test overall acc | selection-holdout avg per-class / overall"
        " | best epoch | params (M) | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| `{r['recipe']}` | {r['backbone']} | {r['avg_class_acc']:.4f} | {r['overall_acc']:.4f} | "
            f"{r['selection_avg_class_acc']:.4f} / {r['selection_overall_acc']:.4f} | "
            f"{r['best_epoch']}/{r['epochs_run']} | {r['parameters_m']} | {r['train_s']:.0f} |"
        )
    (results / "quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    main()
