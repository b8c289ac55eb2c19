"""Which shop recipe suits a small label table, chosen without the photos that judge it (issue 31).

The first-hour replay (benchmarks/first_hour.py) judges a shop's tags on 300 new photos. This script chooses the
recipe `data init --job shop` writes for a small table before those photos are looked at: it writes the replay's
1,500-row table (the same rows, typo fixed, rows of missing photos dropped), trains each candidate recipe on it,
and compares them on what the table itself holds out:

- the selection holdout (135 photos), decoded out of fold by `fashattr calibrate` (what `calibrate` warns on);
- the table's test holdout (151 photos), with the accuracy decoding;

each group beside always answering its most common class. Candidates: `shop_pretrained` (fine-tuned) and
`shop_probe` (frozen features, linear heads).

    python benchmarks/small_table.py --out runs/small_table --results benchmarks/results/small_table
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fashattr.cli import resolve_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from first_hour import fashattr, fix_table, rows_of, write_table
from machine import machine_line

RECIPES = ("shop_pretrained", "shop_probe")


def judged(run: Path, log: Path, cwd: Path, tta: str) -> dict[str, Any]:
    """Calibrate ``run`` and evaluate it on the test holdout: per group, accuracy out of fold on the selection
    holdout, on the test holdout, and each split's most-common-class accuracy."""
    fashattr(["calibrate", str(run), "--tta", tta], log, cwd)
    cal = json.loads((run / "calibration.json").read_text())["cross_fit"]
    fashattr(["eval", str(run), "--split", "test_holdout", "--decode", "accuracy", "--tta", tta], log, cwd)
    test = json.loads((run / "eval_test_holdout.json").read_text())["summary"]
    groups = {}
    for g, floor in cal["majority"].items():
        groups[g] = {
            "selection_oof": cal["accuracy"]["groups"][g]["acc"],
            "selection_majority": floor["acc"],
            "test": test[f"{g}/acc"],
        }
    return {
        "overall_selection_oof": cal["accuracy"]["overall_acc"],
        "overall_test": test["overall_acc"],
        "groups": groups,
    }


def test_majority(run: Path) -> dict[str, float]:
    """Per group, the test holdout's accuracy of always answering the training split's most common class (the
    floor `calibrate` warns against, ``calibration.fit.majority_accuracy``, on the other holdout)."""
    from fashattr.calibration.fit import log_prior, majority_accuracy
    from fashattr.config import load_config
    from fashattr.data.prepare import load_train_eval

    schema, _, _, test = load_train_eval(load_config(run / "config.yaml").data, progress=False)
    assert test is not None and test.labels is not None
    counts = json.loads((run / "calibration.json").read_text())["train_counts"]
    priors = {g.name: log_prior(np.asarray(counts[g.name])) for g in schema.groups if g.kind == "single"}
    return {g: v["acc"] for g, v in majority_accuracy(schema, test.labels, priors).items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/small_table"))
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/small_table"))
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--tta", default="flip+zoom")
    ap.add_argument("--set", nargs="*", default=[], help="training overrides for every recipe (a smoke run)")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    log = out / "log.txt"
    table = out / "labels.csv"
    write_table(table, rows_of(0, 1500))
    fix_table(table)
    started = time.monotonic()
    record: dict[str, Any] = {"machine": machine_line(), "recipes": {}}
    for recipe in args.recipes.split(","):
        cfg = out / f"{recipe}.yaml"
        fashattr(["data", "init", str(table), "--job", "shop", "--out", cfg.name], log, out)
        # The table's config (its data section: format, root, declared classes) on the candidate recipe.
        merged = yaml.safe_load(resolve_config(recipe).read_text())
        merged["data"] = {**merged["data"], **yaml.safe_load(cfg.read_text())["data"]}
        cfg.write_text(yaml.safe_dump(merged, sort_keys=False))
        t0 = time.monotonic()
        fashattr(["train", cfg.name, "out_dir=runs", f"name={recipe}", "train.progress=false", *args.set], log, out)
        minutes = (time.monotonic() - t0) / 60
        result = judged(out / "runs" / recipe, log, out, args.tta)
        result["train_minutes"] = round(minutes, 1)
        for g, v in test_majority(out / "runs" / recipe).items():
            result["groups"][g]["test_majority"] = v
        record["recipes"][recipe] = result
    record["minutes"] = round((time.monotonic() - started) / 60, 1)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.with_name(args.results.name + ".json").write_text(json.dumps(record, indent=1) + "\n")
    names = list(record["recipes"])
    lines = [
        "# A shop's recipe for a small table, chosen on the table itself (benchmarks/small_table.py)",
        "",
        f"`python benchmarks/small_table.py {shlex.join(argv if argv is not None else sys.argv[1:])}` on "
        f"{record['machine']}; {record['minutes']} min. The first-hour replay's 1,500-row table (typo fixed, rows "
        "of missing photos dropped); "
        "the 300 photos that judge the replay are not used. Accuracy decoding, TTA "
        f"{args.tta}; selection = out of fold on the 135-photo selection holdout (`calibrate`), test = the table's "
        "151-photo test holdout; majority = always the training split's most common class.",
        "",
        "| recipe | train | overall, selection | overall, test |",
        "|---|---:|---:|---:|",
        *(
            f"| `{r}` | {v['train_minutes']} min | {v['overall_selection_oof']:.4f} | {v['overall_test']:.4f} |"
            for r, v in record["recipes"].items()
        ),
        "",
        "| group | majority, selection | "
        + " | ".join(f"{r}, selection" for r in names)
        + " | majority, test | "
        + " | ".join(f"{r}, test" for r in names)
        + " |",
        "|---|" + "---:|" * (2 * len(names) + 2),
    ]
    first = record["recipes"][names[0]]["groups"]
    for g in first:
        cells = [f"{first[g]['selection_majority']:.3f}"]
        cells += [f"{record['recipes'][r]['groups'][g]['selection_oof']:.3f}" for r in names]
        cells += [f"{first[g]['test_majority']:.3f}"]
        cells += [f"{record['recipes'][r]['groups'][g]['test']:.3f}" for r in names]
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    lines.append("")
    args.results.with_name(args.results.name + ".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
