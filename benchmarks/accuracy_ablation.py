"""Accuracy ablation: rows of `fashattr train` runs, each on top of the previous, measured on the fixed test holdout.

    python benchmarks/accuracy_ablation.py benchmarks/accuracy_ablation.yaml --seeds 0,1,2

The spec (YAML) names a base config and a list of rows::

    base: configs/recipes/cpu_resnet18.yaml    # or a recipe name (recipe:cpu_quick)
    rows:
      - name: baseline
      - name: label smoothing 0.1
        overrides: [loss.label_smoothing=0.1]  # added to every earlier row's overrides
      - name: flip TTA
        eval: {tta: flip}                      # evaluation options carry on too; no new override: no new training
      - name: teacher seed 7
        overrides: [train.seed=7]
        standalone: true                       # its overrides do not carry to later rows
      - name: self-training
        pseudo_label: {from: previous, threshold: 0.9, splits: [val, test]}
      - name: self-training, rare groups looser
        pseudo_label: {from: baseline, threshold: 0.9, group_thresholds: {fabric: 0.7}, splits: [val, test]}
        # optional tta: the teacher's test-time augmentation (flip, flip+zoom) when it labels
        standalone: true
      - name: distilled
        distill_from: [baseline, teacher seed 7]   # rows whose runs (same seed) are the teachers

Per row and seed: train (a finished run is not trained again; a killed one is resumed), `fashattr calibrate`
on the selection holdout (the accuracy / balanced decodings), then evaluate on the test holdout: average
per-class accuracy with the balanced decoding and overall accuracy with the accuracy decoding, each with a
percentile bootstrap interval (report/stats.py). Writes RESULTS.json and RESULTS.md (default
benchmarks/results/accuracy_ablation): per row the command, training wall time, both metrics (mean and
spread over seeds, interval of each seed) and the change against the row it builds on (the previous
row that is not standalone). The machine's load
before and after is recorded: the CPU is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_line

ROOT = Path(__file__).resolve().parents[1]
METRICS = (("avg_class_acc", "balanced"), ("overall_acc", "accuracy"))  # (metric, the decoding that serves it)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "row"


def plan(spec: dict[str, Any], extra: list[str]) -> list[dict[str, Any]]:
    """Each row with its cumulative overrides and evaluation options, and whether it trains a new model."""
    rows, carried, carried_eval, previous = [], list(extra), {"tta": "none"}, None
    names = [r["name"] for r in spec["rows"]]
    if len(set(names)) != len(names):
        raise SystemExit(f"row names must be unique: {names}")
    for r in spec["rows"]:
        unknown = set(r) - {"name", "overrides", "eval", "standalone", "pseudo_label", "distill_from"}
        if unknown:
            raise SystemExit(f"row {r['name']!r}: unknown keys {sorted(unknown)}")
        if r.get("pseudo_label") is not None:
            check_pseudo_spec(r["name"], r["pseudo_label"], names[: names.index(r["name"])])
        for teacher in r.get("distill_from") or []:
            if teacher not in names[: names.index(r["name"])]:
                raise SystemExit(f"row {r['name']!r}: distill_from names {teacher!r}, which is not an earlier row")
        overrides = [*carried, *r.get("overrides", [])]
        evaluation = {**carried_eval, **(r.get("eval") or {})}
        own_data = bool(r.get("overrides") or r.get("pseudo_label") or r.get("distill_from"))
        row = {
            "name": r["name"],
            "overrides": overrides,
            "eval": evaluation,
            "pseudo_label": r.get("pseudo_label"),
            "distill_from": r.get("distill_from") or [],
            # The row this one is built on (the last earlier row that is not standalone): its change is against it.
            "builds_on": None if previous is None else previous["name"],
            # A row that changes only the evaluation reuses the previous row's model.
            "same_model_as": None if own_data or previous is None else previous["same_model_as"] or previous["name"],
        }
        rows.append(row)
        if not r.get("standalone"):
            carried, carried_eval, previous = overrides, evaluation, row
            if r.get("pseudo_label"):
                carried = [*carried, "__pseudo__"]  # resolved per seed: the pseudo-label file of this row
            if r.get("distill_from"):
                carried = [*carried, f"__distill__={','.join(r['distill_from'])}"]
    return rows


def check_pseudo_spec(row: str, spec: dict[str, Any], earlier: list[str]) -> None:
    """Refuse a ``pseudo_label`` spec with unknown keys or a source that is no earlier row, before any training."""
    unknown = set(spec) - {"from", "threshold", "group_thresholds", "splits", "tta"}
    if unknown:
        raise SystemExit(f"row {row!r}: unknown pseudo_label keys {sorted(unknown)}")
    source = spec.get("from", "previous")
    if source != "previous" and source not in earlier:
        raise SystemExit(f"row {row!r}: pseudo_label from {source!r}, which is not an earlier row ({earlier})")
    if source == "previous" and not earlier:
        raise SystemExit(f"row {row!r}: pseudo_label from the previous row, but it is the first row")


def pseudo_args(spec: dict[str, Any], source: Path, target: Path) -> list[str]:
    """The ``fashattr pseudo-label`` arguments of a row's ``pseudo_label`` spec."""
    args = ["pseudo-label", str(source), "--threshold", str(spec.get("threshold", 0.9)), "--out", str(target)]
    for group, threshold in (spec.get("group_thresholds") or {}).items():
        args += ["--group-threshold", f"{group}={threshold}"]
    if spec.get("tta"):  # the teacher's test-time augmentation (its labels are then its TTA-averaged logits)
        args += ["--tta", str(spec["tta"])]
    splits = ",".join(spec.get("splits", []))
    return args + (["--splits", splits] if splits else [])


def run_cli(args: list[str], log: Path) -> float:
    """``fashattr ARGS`` in a subprocess, output appended to ``log``; returns its wall time in seconds."""
    start = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ fashattr {shlex.join(args)}\n")
        f.flush()
        done = subprocess.run([sys.executable, "-m", "fashattr", *args], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"`fashattr {shlex.join(args)}` failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start


def resolve(overrides: list[str], runs: dict[str, Path], pseudo_files: list[Path]) -> list[str]:
    """Replace the placeholders of pseudo-label files and teacher rows by this seed's paths."""
    out, pseudo = [], iter(pseudo_files)
    for o in overrides:
        if o == "__pseudo__":
            out.append(f"data.pseudo_labels={next(pseudo)}")
        elif o.startswith("__distill__="):
            teachers = [str(runs[name]) for name in o.split("=", 1)[1].split(",")]
            out.append(f"loss.distill_from=[{','.join(teachers)}]")
        else:
            out.append(o)
    return out


def train_row(row: dict[str, Any], base: str, seed: int, out: Path, runs: dict[str, Path], state: dict) -> Path:
    """Train (or resume, or reuse) this row's run for ``seed``; records the command and wall time in ``state``."""
    if row["same_model_as"]:
        return runs[row["same_model_as"]]
    name = f"{slug(row['name'])}-s{seed}"
    run_dir = out / name
    log = out / f"{name}.log"
    previous = next(reversed(list(runs)), None)  # the last row trained before this one
    pseudo_files = [Path(p) for p in state.setdefault("pseudo_files", {}).get(str(seed), [])]
    if row["pseudo_label"]:
        spec = row["pseudo_label"]
        source_row = previous if spec.get("from", "previous") == "previous" else spec["from"]
        if source_row is None:  # check_pseudo_spec refuses this before any training; say so if it slips through
            raise SystemExit(f"row {row['name']!r}: pseudo_label from the previous row, but no row trained before it")
        source = runs[source_row]
        target = out / f"pseudo-{name}.json"
        if not target.is_file():
            run_cli(pseudo_args(spec, source, target), log)
        if target not in pseudo_files:
            pseudo_files.append(target)
            state["pseudo_files"].setdefault(str(seed), []).append(str(target))
    overrides = resolve(row["overrides"], runs, pseudo_files)
    if row["pseudo_label"]:
        overrides.append(f"data.pseudo_labels={pseudo_files[-1]}")
    if row["distill_from"]:
        overrides.append(f"loss.distill_from=[{','.join(str(runs[t]) for t in row['distill_from'])}]")
    # The seed first: a row that sets its own train.seed (an ensemble's teachers) keeps it.
    args = ["train", base, f"train.seed={seed}", *overrides, f"out_dir={out}", f"name={name}"]
    key = f"{row['name']}|{seed}"
    if (run_dir / "summary.json").is_file() and key in state["trained"]:
        return run_dir  # finished: not trained again
    resumed = (run_dir / "checkpoint.pt").is_file()
    if resumed:  # killed: resumed where it stopped; the wall time is then the trainer's own, over its sessions
        run_cli(["train", "--resume", str(run_dir)], log)
        wall = float(json.loads((run_dir / "summary.json").read_text())["wall_s"])
    else:
        wall = run_cli(args, log)
    state["trained"][key] = {"command": "fashattr " + shlex.join(args), "wall_s": round(wall, 1), "resumed": resumed}
    return run_dir


def restore(results: Path, seeds: list[int]) -> dict[str, Any]:
    """The per-seed results that an earlier RESULTS.json records, keyed ``"row|seed"``.

    Run folders are scratch (``runs/`` is not committed) and the state file lives beside them; the committed
    results are the record. A row restored from them is neither trained nor evaluated again, so a spec can grow by
    a row on a machine that never had the earlier runs. Its training time is the one recorded (the mean over its
    seeds); ``cpu`` is the machine the file names.
    """
    if not results.is_file():
        return {}
    recorded = json.loads(results.read_text())
    meta, out = recorded["meta"], {}
    for entry in recorded["rows"]:
        per_seed = {m: entry[m]["per_seed"] for m, _ in METRICS}
        if entry["seeds"] != len(meta["seeds"]):
            continue  # which seeds a partial row had is not recorded: train it again
        for i, seed in enumerate(meta["seeds"]):
            if seed not in seeds:
                continue
            out[f"{entry['name']}|{seed}"] = {
                "command": entry["command"],
                "wall_s": entry["train_wall_s"],
                "train_wall_s": entry["train_wall_s"],
                "run": None,
                "restored_from": str(results),
                "cpu": entry.get("cpu") or meta["cpu"],
                "metrics": {m: per_seed[m][i] for m, _ in METRICS} | {"images": meta["test_images"]},
            }
    return out


def needed_runs(row: dict[str, Any]) -> list[str]:
    """The earlier rows whose trained models this row needs (teachers, a pseudo-label source, a shared model)."""
    names = [*row["distill_from"]]
    names += [o.split("=", 1)[1] for o in row["overrides"] if o.startswith("__distill__=")]
    source = (row["pseudo_label"] or {}).get("from")
    if source and source != "previous":
        names.append(source)
    if row["same_model_as"]:
        names.append(row["same_model_as"])
    return [n for name in names for n in name.split(",")]


def evaluate(run_dir: Path, tta: str, resamples: int, log: Path) -> dict[str, Any]:
    """Both metrics on the test holdout, each with its decoding and a bootstrap interval."""
    from fashattr.config import load_config
    from fashattr.data.prepare import TEST_HOLDOUT, inference_data, load_split
    from fashattr.predictor import Predictor

    # The decodings are fitted on the selection holdout (never the test holdout), on the logits this row
    # evaluates: with its TTA. A row that reuses a model with another TTA fits them again.
    cal = run_dir / "calibration.json"
    fitted = json.loads(cal.read_text())["fitted_on"].get("tta", "none") if cal.is_file() else None
    if fitted != tta:
        run_cli(["calibrate", str(run_dir), "--tta", tta], log)
    cfg = load_config(run_dir / "config.yaml")
    predictor = Predictor.from_run(run_dir, tta=tta)
    _, data = load_split(inference_data(cfg.data), TEST_HOLDOUT, progress=False)
    assert data.labels is not None
    scores = predictor.scores(data.pixels(), cfg.train.eval_batch_size)
    return {
        "images": len(data),
        **both_metrics(predictor.schema, data.labels, predictor.runtime.config, scores, resamples),
    }


def both_metrics(
    schema: Any, labels: dict[str, np.ndarray], config: dict[str, Any], scores: dict[str, np.ndarray], resamples: int
) -> dict[str, Any]:
    """Average per-class accuracy (balanced decoding) and overall accuracy (accuracy decoding) of ``scores``
    decoded by a bundle ``config``'s decodings, each with its 95% percentile bootstrap interval."""
    from fashattr.metrics import compute_metrics
    from fashattr.portable.decoding import decision_logits
    from fashattr.report.stats import bootstrap_ci

    out: dict[str, Any] = {}
    for metric, mode in METRICS:
        decided = decision_logits(config, scores, mode)
        value = compute_metrics(schema, labels, decided).summary()[metric]
        ci = bootstrap_ci(schema, labels, decided, {metric: value}, resamples)[metric]
        out[metric] = {"decode": mode, "value": value, "lo": ci["lo"], "hi": ci["hi"]}
    return out


def summarize(rows: list[dict[str, Any]], results: dict[str, Any], seeds: list[int]) -> list[dict[str, Any]]:
    table: list[dict[str, Any]] = []
    done: dict[str, dict[str, Any]] = {}
    for row in rows:
        per_seed = [results[f"{row['name']}|{s}"] for s in seeds if f"{row['name']}|{s}" in results]
        if not per_seed:
            continue
        entry: dict[str, Any] = {"name": row["name"], "seeds": len(per_seed), "command": per_seed[0]["command"]}
        entry["tta"] = row["eval"]["tta"]
        entry["same_model_as"] = row["same_model_as"]
        entry["builds_on"] = row["builds_on"]
        before = done.get(row["builds_on"] or "")
        entry["train_wall_s"] = float(np.mean([r["train_wall_s"] for r in per_seed]))
        # Wall times compare only on one machine: the CPU differs between sessions (see machine.py).
        entry["cpu"] = " / ".join(dict.fromkeys(r.get("cpu", "unknown") for r in per_seed))
        for metric, _ in METRICS:
            values = [r["metrics"][metric]["value"] for r in per_seed]
            entry[metric] = {
                "mean": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                "per_seed": [r["metrics"][metric] for r in per_seed],
                "change": None if before is None else float(np.mean(values)) - before[metric]["mean"],
            }
        table.append(entry)
        done[row["name"]] = entry
    return table


def markdown(table: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    hosts = list(dict.fromkeys(e["cpu"] for e in table))
    where = hosts[0] if len(hosts) == 1 else "trained on the hosts named below"
    lines = [
        "# Accuracy ablation (test holdout)",
        "",
        f"{meta['note']}",
        "",
        f"Spec `{meta['spec']}`, seeds {meta['seeds']}, {meta['resamples']} bootstrap resamples, "
        f"{meta['test_images']} test-holdout images; load average {meta['load_before']} before, "
        f"{meta['load_after']} after; {where}.",
        "",
        "Average per-class accuracy with the balanced decoding, overall accuracy with the accuracy decoding "
        "(both fitted by `fashattr calibrate --tta` on the selection holdout); the interval is seed 0's 95% bootstrap; "
        "change = against the row it builds on (mean over seeds): the previous row, leaving out rows marked "
        "standalone (a lever that did not help, a teacher, or one over the budget), which later rows do not carry.",
        "",
        "| row | train wall | avg per-class acc [95% CI] | change | overall acc [95% CI] | change | command |",
        "|---|---:|---|---:|---|---:|---|",
    ]

    if len(hosts) > 1:  # name each row's machine beside its wall time
        lines[6:6] = [
            "Hosts (train wall times compare only within one): "
            + "; ".join(f"{chr(65 + i)} = {h}" for i, h in enumerate(hosts))
            + ".",
            "",
        ]

    def cell(m: dict[str, Any]) -> str:
        first = m["per_seed"][0]
        spread = f" ± {m['std']:.4f}" if m["std"] is not None else ""
        return f"{m['mean']:.4f}{spread} [{first['lo']:.3f}, {first['hi']:.3f}]"

    def change(m: dict[str, Any]) -> str:
        return "" if m["change"] is None else f"{m['change']:+.4f}"

    for e in table:
        a, o = e["avg_class_acc"], e["overall_acc"]
        tta = f" (eval --tta {e['tta']})" if e["tta"] != "none" else ""
        wall = f"{e['train_wall_s'] / 60:.1f} min" if not e["same_model_as"] else f"({e['same_model_as']}'s model)"
        if len(hosts) > 1 and not e["same_model_as"]:
            wall += f" ({chr(65 + hosts.index(e['cpu']))})"
        lines.append(
            f"| {e['name']} | {wall} | {cell(a)} | {change(a)} | {cell(o)} | {change(o)} | `{e['command']}`{tta} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", help="the rows (YAML)")
    ap.add_argument("--seeds", default="0", help="comma-separated train.seed values (>= 3 for run-to-run spread)")
    ap.add_argument("--out", default="runs/ablation", help="folder of the runs, logs and the resumable state")
    ap.add_argument("--results", default="benchmarks/results/accuracy_ablation", help="RESULTS.json / RESULTS.md")
    ap.add_argument("--rows", type=int, help="only the first N rows")
    ap.add_argument("--only", action="append", help="only this row (repeatable; none that needs another's run)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides added to every row")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--note", default="", help="a line for the top of the .md (what this run is)")
    args = ap.parse_args()
    spec = yaml.safe_load(Path(args.spec).read_text())
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = plan(spec, args.set)[: args.rows]
    if args.only:
        wanted = args.only
        missing = sorted(set(wanted) - {r["name"] for r in rows})
        if missing:
            raise SystemExit(f"--only names rows the spec does not have: {missing}")
        rows = [r for r in rows if r["name"] in wanted]
        if any(needed_runs(r) for r in rows):
            raise SystemExit("--only: a row that needs another row's run (teacher, pseudo labels, shared model)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    state.setdefault("trained", {})
    results: dict[str, Any] = state.setdefault("results", {})
    for key, value in restore(Path(f"{args.results}.json"), seeds).items():
        results.setdefault(key, value)
    load_before = [round(x, 2) for x in os.getloadavg()]
    test_images = None
    for seed in seeds:
        runs: dict[str, Path] = {}
        for row in rows:
            key = f"{row['name']}|{seed}"
            if results.get(key, {}).get("restored_from"):
                runs[row["name"]] = out / f"{slug(row['name'])}-s{seed}"  # gone, unless this folder still has it
            else:
                gone = [n for n in needed_runs(row) if not (runs[n] / "summary.json").is_file()]
                if gone or (row["pseudo_label"] and not (runs[list(runs)[-1]] / "summary.json").is_file()):
                    raise SystemExit(
                        f"row {row['name']!r} needs the trained models of {gone or 'the previous row'}, whose results "
                        f"are restored from {args.results}.json but whose run folders are gone: train them again "
                        f"(leave them out of that file)"
                    )
                run_dir = train_row(row, spec["base"], seed, out, runs, state)
                runs[row["name"]] = run_dir
            state_path.write_text(json.dumps(state, indent=1))
            if key not in results:
                trained = state["trained"][f"{row['same_model_as'] or row['name']}|{seed}"]
                metrics = evaluate(run_dir, row["eval"]["tta"], args.resamples, out / f"{run_dir.name}.log")
                results[key] = {
                    **trained,
                    "train_wall_s": trained["wall_s"],
                    "run": str(run_dir),
                    "cpu": machine_line(),
                    "metrics": metrics,
                }
                state_path.write_text(json.dumps(state, indent=1))
            test_images = results[key]["metrics"]["images"]
            m = results[key]["metrics"]
            print(
                f"{row['name']:<32} seed {seed}: avg_class_acc {m['avg_class_acc']['value']:.4f}  "
                f"overall_acc {m['overall_acc']['value']:.4f}  ({results[key]['train_wall_s']:.0f} s training)",
                flush=True,
            )
    table = summarize(rows, results, seeds)
    meta = {
        "spec": args.spec,
        "seeds": seeds,
        "set": args.set,
        "resamples": args.resamples,
        "test_images": test_images,
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "cpu": machine_line(),
        "note": args.note,
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.results}.json").write_text(json.dumps({"meta": meta, "rows": table}, indent=1) + "\n")
    Path(f"{args.results}.md").write_text(markdown(table, meta))
    print(f"written: {args.results}.json and .md")


if __name__ == "__main__":
    main()
