"""``fashattr report A B ...``: runs side by side on the same split.

Summary (each run's recipe and metrics with bootstrap intervals, and the paired interval of each
run's difference from the first), Curves (overlaid), Per-class deltas (recall per class against the
first run), Disagreements (images one run gets right and the other wrong).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fashattr.report import figures, stats
from fashattr.report.collect import Evaluated
from fashattr.report.compare import compare_rows
from fashattr.report.explain import short, verdict
from fashattr.report.html import Section, esc, figure, note, num, table, with_ci
from fashattr.report.sections import Options, metrics_of, run_steps

DISAGREEMENTS = 12  # images per grid


def _same_images(runs: Sequence[Evaluated]) -> bool:
    return all(r.paths == runs[0].paths for r in runs[1:]) and all(r.schema == runs[0].schema for r in runs[1:])


def _summary(runs: Sequence[Evaluated], opt: Options, paired: bool) -> tuple[Section, dict[str, Any]]:
    facts = compare_rows([r.info for r in runs])
    # the recorded facts; the per-group columns are left to the table below, measured on the same images
    keep = ("run", "recipe", "backbone", "size", "params_m", "mb", "avg_class_acc", "overall_acc")
    cols = [c for c in facts[0] if c in keep or c.startswith("test_") or c in ("best_epoch", "wall_s")]
    body = "".join(note(n) for r in runs for n in r.notes)
    shown = [
        [num(row[c]) if isinstance(row[c], float) else "-" if row[c] is None else row[c] for c in cols] for row in facts
    ]
    body += table(cols, shown, left=3)
    body += (
        '<p class="muted">As each run recorded them: avg_class_acc and overall_acc on its selection holdout at '
        "its best epoch, test_* on its test holdout. The table below evaluates every run "
        "on the same split.</p>"
    )
    out: dict[str, Any] = {"runs": facts}
    if runs[0].labels is None:
        return Section("summary", "Summary", body), out
    keys = ["avg_class_acc", "overall_acc", "exact_match"] + [f"{g}/avg_class_acc" for g in runs[0].schema.names]
    n = len(runs[0].paths)
    _, counts = stats.bootstrap_counts(n, opt.resamples, opt.seed)  # the same resamples for every run
    per_run, samples = {}, {}
    for r in runs:
        metrics = metrics_of(r)
        assert metrics is not None and r.labels is not None
        point = {k: v for k, v in metrics.summary().items() if k in keys}
        per_run[r.info.name] = stats.bootstrap_ci(r.schema, r.labels, r.logits, point, opt.resamples, opt.seed)
        samples[r.info.name] = stats.resample_stats(r.schema, r.labels, r.logits, counts)
    rows = []
    base = runs[0].info.name
    deltas: dict[str, dict[str, Any]] = {}
    for r in runs:
        name = r.info.name
        row = [esc(name)] + [with_ci(per_run[name].get(k)) for k in keys]
        if paired and name != base:
            d = samples[name]["avg_class_acc"] - samples[base]["avg_class_acc"]
            d = d[~np.isnan(d)]
            value = per_run[name]["avg_class_acc"]["value"] - per_run[base]["avg_class_acc"]["value"]  # type: ignore[operator]
            lo, hi = np.percentile(d, [2.5, 97.5])
            deltas[name] = {"value": value, "lo": float(lo), "hi": float(hi), "resamples": len(d)}
            row.append(with_ci(deltas[name]))
        else:
            row.append("-")
        rows.append(row)
    header = ["run", *[k.replace("/avg_class_acc", " (avg/class)") for k in keys], f"avg_class_acc \u2212 {base}"]
    body += f"<h3>Metrics on split {esc(runs[0].split)!s} ({n} images)</h3>" + table(header, rows, raw=True)
    body += (
        f'<p class="muted">[low, high]: 95% bootstrap interval over images ({opt.resamples} resamples, seed '
        f"{opt.seed}); the last column's interval is paired (each resample draws the same images for every "
        "run), which is what says whether a difference is more than the draw of images.</p>"
    )
    out.update(ci=per_run, paired_difference=deltas)
    return Section("summary", "Summary", body), out


def _curves(runs: Sequence[Evaluated], opt: Options) -> tuple[Section, dict[str, Any]]:
    histories = {r.info.name: r.info.history for r in runs}
    fig = figures.curves_figure(histories, runs[0].info.select_metric, runs[0].schema.names)
    files = figures.save(fig, opt.figures, "curves")
    return Section("curves", "Curves", figure(files, "training curves of every run", wide=True)), {"figure": files}


def _deltas(runs: Sequence[Evaluated], opt: Options) -> tuple[Section, dict[str, Any]]:
    if runs[0].labels is None:
        return Section("deltas", "Per-class deltas", note("no labels on this split: no recall to compare.")), {}
    recalls = {}
    for r in runs:
        metrics = metrics_of(r)
        assert metrics is not None
        recalls[r.info.name] = {g: metrics.groups[g].recall for g in r.schema.names}
    base = runs[0].info.name
    figs: dict[str, Any] = {}
    body, out = "", {"recall": recalls, "figures": figs}
    for r in runs[1:]:
        name = r.info.name
        per_group: dict[str, tuple[list[str], list[float | None]]] = {}
        rows = []
        for g in r.schema.groups:
            d = [
                None if a is None or b is None else b - a
                for a, b in zip(recalls[base][g.name], recalls[name][g.name], strict=True)
            ]
            per_group[g.name] = (list(g.classes), d)
            for c, a, b, v in zip(g.classes, recalls[base][g.name], recalls[name][g.name], d, strict=True):
                rows.append([g.name, c, num(a, 3), num(b, 3), "-" if v is None else f"{100 * v:+.1f}"])
        files = figures.save(
            figures.deltas_figure(per_group, f"recall per class: {name} \u2212 {base}"), opt.figures, f"deltas_{name}"
        )
        figs[name] = files
        body += f"<h3>{esc(name)} against {esc(base)}</h3>"
        body += '<div class="row">' + table(["group", "class", base, name, "\u0394 (points)"], rows, left=2)
        body += figure(files, f"per-class recall change of {name}") + "</div>"
    return Section("deltas", "Per-class deltas", body), out


def _disagreements(runs: Sequence[Evaluated], opt: Options, same: bool) -> tuple[Section, dict[str, Any]]:
    if not same:
        return Section(
            "disagreements",
            "Disagreements",
            note("the runs were evaluated on different images (or schemas): no image-by-image comparison."),
        ), {}
    if runs[0].labels is None:
        return Section("disagreements", "Disagreements", note("no labels on this split.")), {}
    a, body, out = runs[0], "", {}
    labels = a.labels
    assert labels is not None
    for b in runs[1:]:
        pair: dict[str, Any] = {}
        counts_rows = []
        for first, second in ((a, b), (b, a)):
            found = []
            for g in a.schema.groups:
                if g.kind != "single":
                    continue
                t = labels[g.name]
                ok1 = (first.logits[g.name].argmax(1) == t) & (t >= 0)
                ok2 = (second.logits[g.name].argmax(1) == t) & (t >= 0)
                rows = np.flatnonzero(ok1 & ~ok2)
                counts_rows.append([g.name, f"{first.info.name} right, {second.info.name} wrong", len(rows)])
                # the most confident mistakes of the second run first
                conf = second.logits[g.name][rows].max(1) - second.logits[g.name][rows, t[rows]]
                found += [(float(c), int(i), g.name) for c, i in zip(conf, rows, strict=True)]
            found.sort(key=lambda x: -x[0])
            chosen = found[:DISAGREEMENTS]
            key = f"{first.info.name}_right_{second.info.name}_wrong"
            pair[key] = []
            if not chosen:
                continue
            captions, images = [], []
            for _, i, gname in chosen:
                v1, v2 = verdict(first, gname, i), verdict(second, gname, i)
                captions.append(
                    f"{short(gname, 9)}: true {short(str(v1['true']), 12)}\n"
                    f"A: {short(v1['predicted'], 16)} \u2713\nB: {short(v2['predicted'], 16)} \u2717"
                )
                images.append(a.pixels[i])
                pair[key].append({"path": a.paths[i], "group": gname, first.info.name: v1, second.info.name: v2})
            fig = figures.image_grid_figure(np.stack(images), captions, [figures.RIGHT] * len(images), cols=6)
            files = figures.save(fig, opt.figures, f"disagree_{key}", photo=True)
            pair[key + "_figure"] = files
            body += f"<h3>{esc(first.info.name)} right, {esc(second.info.name)} wrong</h3>"
            body += figure(
                files, key, f"A = {first.info.name}, B = {second.info.name}; B's most confident mistakes first."
            )
        body += "<h3>Counts per group</h3>" + table(["group", "which", "images"], counts_rows, left=2)
        out[b.info.name] = {"counts": counts_rows, **pair}
    return Section("disagreements", "Disagreements", body), out


def compare_report(
    runs: Sequence[Evaluated], opt: Options, timings: dict[str, float]
) -> tuple[list[Section], dict[str, Any]]:
    """The sections of a side-by-side report of ``runs`` (the first is the reference)."""
    names = [r.info.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"runs need different folder names to be told apart: {names}")
    same = _same_images(runs)
    steps = [
        ("summary", lambda: _summary(runs, opt, same)),
        ("curves", lambda: _curves(runs, opt)),
        (
            "deltas",
            lambda: (
                _deltas(runs, opt)
                if same
                else (Section("deltas", "Per-class deltas", note("different schemas or images.")), {})
            ),
        ),
        ("disagreements", lambda: _disagreements(runs, opt, same)),
    ]
    return run_steps(steps, timings)
