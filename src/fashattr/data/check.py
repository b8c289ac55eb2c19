"""Dataset audit: counts, class distributions, missing / unreadable / small images, exact
duplicates within and across splits (leakage), label errors with file and line, and per group
the empty cells, classes below a minimum count and likely typos (data/profile.py).

``audit()`` returns a JSON-ready report; ``errors`` counts what makes a dataset unfit to
train on as it is (missing or unreadable images, label errors, cross-split duplicates),
``warnings`` what deserves a look (small images, duplicates within a split, likely typos);
rare classes and empty cells are listed with each split's labels.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fashattr.data.formats import create_reader
from fashattr.data.profile import MIN_COUNT, profile_json, profile_lines, profile_table
from fashattr.data.table import Table, row_labels
from fashattr.errors import DatasetError, ImageError
from fashattr.portable.images import open_image
from fashattr.schema import Schema

log = logging.getLogger(__name__)


def _inspect(job: tuple[str, int, str]) -> tuple[str, int, str, tuple[int, int] | None, str | None]:
    """Worker: (split, row, path) -> (split, row, sha256 of the bytes, (width, height) or None, error)."""
    split, row, path = job
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        img = open_image(path)
        return split, row, digest, img.size, None
    except ImageError as e:
        return split, row, digest, None, str(e).split(": ", 1)[-1]


def _read_splits(reader: Any, report: dict[str, Any]) -> dict[str, Table]:
    """Every split the reader can read; a split with label errors is recorded in ``unread_splits``
    and, where the reader can list its images alone (``read_images``), still audited as images."""
    tables: dict[str, Table] = {}
    for split in reader.splits():
        try:
            table = reader.read(split, allow_missing=True)
        except DatasetError as e:
            report["label_errors"] += [{"file": e.file, "line": ln, "problem": msg} for ln, msg in e.problems]
            report["unread_splits"].append(split)
            images = getattr(reader, "read_images", None)
            if images is None:
                continue
            try:
                table = images(split, allow_missing=True)
            except DatasetError:
                continue  # the same faults, already listed above
            report["images_only_splits"].append(split)
        tables[split] = table
        report["missing"] += [{"split": split, "file": f, "line": ln, "path": p} for f, ln, p in table.missing]
    return tables


def _distributions(tables: dict[str, Table], schema: Schema, images_only: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split, table in tables.items():
        entry: dict[str, Any] = {"count": len(table) + len(table.missing), "labeled": table.labeled}
        if split in images_only:
            entry["labels_read"] = False
        if table.labeled:
            counts = table.class_counts(schema)
            entry["class_counts"] = {
                g.name: dict(zip(g.classes, counts[g.name].tolist(), strict=True)) for g in schema.groups
            }
        out[split] = entry
    return out


def audit(
    root: str | Path,
    fmt: str = "ai6126",
    min_size: int = 32,
    workers: int = 0,
    progress: bool = True,
    options: dict[str, Any] | None = None,
    min_count: int = MIN_COUNT,
) -> dict[str, Any]:
    """Audit the dataset at ``root`` (layout ``fmt``, reader ``options``); decodes every listed image once.
    Classes with fewer than ``min_count`` images in a split are flagged."""
    reader = create_reader(fmt, root, options)
    schema = reader.schema()
    report: dict[str, Any] = {
        "dataset": str(Path(root).resolve()),
        "format": fmt,
        "min_size": min_size,
        "min_count": min_count,
        "splits": {},
        "missing": [],
        "unreadable": [],
        "small": [],
        "duplicates_within": [],
        "duplicates_across": [],
        "label_errors": [],
        "unread_splits": [],
        "images_only_splits": [],
    }
    tables = _read_splits(reader, report)
    report["splits"] = _distributions(tables, schema, report["images_only_splits"])
    report["labels"] = {
        split: profile_json(profile_table(t, schema, min_count))
        for split, t in tables.items()
        if t.labeled and split not in report["images_only_splits"]
    }

    jobs = [(split, i, str(t.file(i))) for split, t in tables.items() for i in range(len(t))]
    n_proc = min(workers or os.cpu_count() or 1, max(1, len(jobs) // 64))
    by_hash: dict[str, list[tuple[str, int]]] = defaultdict(list)
    with tqdm(total=len(jobs), desc="check images", disable=not progress, unit="img") as bar:
        if n_proc > 1:
            with get_context("spawn").Pool(n_proc) as pool:
                results = list(_tick(pool.imap_unordered(_inspect, jobs, chunksize=32), bar))
        else:
            results = list(_tick(map(_inspect, jobs), bar))
    for split, i, digest, size, error in sorted(results, key=lambda r: (r[0], r[1])):
        path = tables[split].paths[i]
        by_hash[digest].append((split, i))
        if error is not None:
            report["unreadable"].append({"split": split, "path": path, "problem": error})
        elif size is not None and min(size) < min_size:
            report["small"].append({"split": split, "path": path, "width": size[0], "height": size[1]})
    for digest, where in sorted(by_hash.items(), key=lambda kv: kv[1]):
        if len(where) < 2:
            continue
        images = [
            {"split": s, "path": tables[s].paths[i], "labels": row_labels(tables[s], schema, i)} for s, i in where
        ]
        known = [img["labels"] for img in images if img["labels"] is not None]
        entry = {"sha256": digest, "images": images, "conflicting_labels": any(k != known[0] for k in known)}
        key = "duplicates_across" if len({s for s, _ in where}) > 1 else "duplicates_within"
        report[key].append(entry)
    report["errors"] = sum(len(report[k]) for k in ("missing", "unreadable", "label_errors", "duplicates_across"))
    # Likely typos count; rare classes are listed with the labels but not counted (a small split has many).
    typos = sum(len(g["likely_typos"]) for p in report["labels"].values() for g in p.values())
    report["warnings"] = len(report["small"]) + len(report["duplicates_within"]) + typos
    return report


def _tick(results, bar: tqdm):
    for r in results:
        bar.update(1)
        yield r


def format_report(report: dict[str, Any], schema: Schema | None = None) -> str:
    """A terminal summary: per-split counts, per-class table, then every finding (first 20 of each)."""
    lines = [f"dataset {report['dataset']} ({report['format']})", ""]
    unread = report.get("unread_splits", [])
    images_only = report.get("images_only_splits", [])
    for split in unread:  # said first: every count below leaves these splits' labels (or all of them) out
        how = "its images are checked without labels" if split in images_only else "it is in no count below"
        lines.append(f"NOT READ: split {split!r} has label errors (listed below); {how}")
    if unread:
        lines.append("")
    lines.append(f"{'split':<10} {'images':>7}  labeled")
    for split, e in report["splits"].items():
        state = "labels not read" if e.get("labels_read") is False else "yes" if e["labeled"] else "no"
        lines.append(f"{split:<10} {e['count']:>7}  {state}")
    for split in unread:
        if split not in report["splits"]:
            lines.append(f"{split:<10} {'-':>7}  not read")
    labeled = {s: e["class_counts"] for s, e in report["splits"].items() if e["labeled"]}
    if labeled:
        first = next(iter(labeled.values()))
        w = max(10, *(len(g) for g in first))  # FASHION-HOW's "Embellishment" is wider than 10
        lines += ["", f"{'group':<{w}} {'class':<18} " + " ".join(f"{s:>8}" for s in labeled)]
        for group, classes in first.items():
            for k, c in enumerate(classes):
                shown = group if k == 0 else ""
                lines.append(f"{shown:<{w}} {c:<18} " + " ".join(f"{labeled[s][group][c]:>8}" for s in labeled))
    for split, groups in report.get("labels", {}).items():
        lines += ["", f"labels of split {split!r}:"]
        lines += ["  " + line for line in _label_lines(groups, report.get("min_count", MIN_COUNT))]
    names = {
        "missing": "missing files",
        "unreadable": "unreadable, truncated or corrupt images",
        "label_errors": "label errors",
        "duplicates_across": "exact duplicates across splits (leakage)",
        "duplicates_within": "exact duplicates within a split",
        "small": f"images smaller than {report['min_size']} px",
    }
    lines.append("")
    for key, title in names.items():
        items = report[key]
        lines.append(f"{title}: {len(items)}")
        for item in items[:20]:
            lines.append(f"  {_describe(key, item)}")
        if len(items) > 20:
            lines.append(f"  ... and {len(items) - 20} more (see the JSON report)")
    lines += ["", f"{report['errors']} error(s), {report['warnings']} warning(s)"]
    return "\n".join(lines)


def _label_lines(groups: dict[str, Any], min_count: int) -> list[str]:
    from fashattr.data.profile import GroupProfile

    profiles = [
        GroupProfile(name, g["kind"], g["counts"], g["empty"], g["rows"], g["rare"], g["unused"], g["likely_typos"])
        for name, g in groups.items()
    ]
    return profile_lines(profiles, min_count)


def _describe(key: str, item: dict[str, Any]) -> str:
    if key == "missing":
        return f"{item['file']}:{item['line']}: {item['path']} not found"
    if key == "unreadable":
        return f"{item['split']}: {item['path']}: {item['problem']}"
    if key == "label_errors":
        where = f"{item['file']}:{item['line']}" if item["line"] is not None else item["file"]
        return f"{where}: {item['problem']}"
    if key == "small":
        return f"{item['split']}: {item['path']} is {item['width']}x{item['height']}"
    text = ", ".join(f"{i['split']}:{i['path']}" for i in item["images"])
    return text + ("  (labels differ)" if item["conflicting_labels"] else "")


MAX_BARS = 40  # per group in the PNG; the JSON report has every class


def plot_distribution(report: dict[str, Any], out: str | Path) -> Path | None:
    """A PNG bar chart of class counts per group, one bar per labeled split; None if nothing is labeled."""
    # A Figure of its own, not pyplot: no global backend switch, nothing left open in a notebook.
    from matplotlib.figure import Figure

    labeled = {s: e["class_counts"] for s, e in report["splits"].items() if e["labeled"]}
    if not labeled:
        return None
    groups = list(next(iter(labeled.values())))
    fig = Figure(figsize=(9, 2.4 * len(groups)))
    axes = fig.subplots(len(groups), 1, squeeze=False)
    width = 0.8 / len(labeled)
    for ax, group in zip(axes[:, 0], groups, strict=True):
        first = next(iter(labeled.values()))[group]
        classes = list(first)
        if len(classes) > MAX_BARS:  # DeepFashion has groups of 100s: the most frequent, said so
            classes = sorted(classes, key=lambda c: -first[c])[:MAX_BARS]
            ax.set_title(f"{group}: the {MAX_BARS} most frequent of {len(first)} classes", fontsize=8)
        for k, (split, counts) in enumerate(labeled.items()):
            xs = [i + k * width for i in range(len(classes))]
            bars = ax.bar(xs, [counts[group][c] for c in classes], width, label=split)
            ax.bar_label(bars, fontsize=7)
        ticks = [i + width * (len(labeled) - 1) / 2 for i in range(len(classes))]
        ax.set_xticks(ticks, classes, fontsize=8, rotation=90 if len(classes) > 12 else 0)
        ax.set_ylabel(group)
        ax.margins(y=0.2)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"class counts: {report['dataset']}", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    return out
