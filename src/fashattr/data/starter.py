"""``fashattr data init``: a first config written from the user's own labels.

It reads the table (or folder) once, profiles every labelled split (data/profile.py), and writes a config that:
declares each group's classes, leaving likely typos out, so that a misspelt label stops training with its file,
line and closest class instead of becoming a class of its own; takes the recipe that serves the job
(``JOBS``); and says in its header what was found and what the recipe optimises.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from fashattr.data.formats import create_reader
from fashattr.data.profile import MIN_COUNT, GroupProfile, flag, profile_lines, profile_table

# job -> (recipe, what it optimises and the decoding its runs default to)
JOBS: dict[str, tuple[str, str]] = {
    "shop": (
        "shop_pretrained",
        "overall accuracy (the most tags right); `fashattr calibrate` makes the accuracy decoding the default",
    ),
    "challenge": (
        "cpu_pretrained",
        "average per-class accuracy (rare classes count as much as common ones); the balanced decoding is the default",
    ),
}
# A table with fewer labelled photos than SMALL_TABLE gets its job's small-table recipe. On 1,500 photos the
# frozen-feature probe scored as well as fine-tuning (overall accuracy 0.738 / 0.769 against 0.742 / 0.760 on the
# selection and test holdouts; benchmarks/small_table.py) and trained in 44 s from an empty cache against 7 min; on
# the whole FashionDataset (5,500 photos) fine-tuning wins by 2.4 points. 3,000 lies between the two sizes measured.
SMALL_TABLE = 3000
SMALL_RECIPES: dict[str, str] = {"shop": "shop_probe"}


def job_recipe(job: str, labelled_rows: int) -> str:
    """The recipe ``data init`` writes for ``job`` on a table of ``labelled_rows`` labelled photos."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}; choose from {sorted(JOBS)}")
    if labelled_rows < SMALL_TABLE and job in SMALL_RECIPES:
        return SMALL_RECIPES[job]
    return JOBS[job][0]


def _merged(profiles: list[list[GroupProfile]], min_count: int) -> list[GroupProfile]:
    """One profile over every labelled split: counts and empty cells added up, flagged on the whole table."""
    merged: dict[str, GroupProfile] = {}
    for per_split in profiles:
        for p in per_split:
            m = merged.setdefault(p.name, GroupProfile(p.name, p.kind, dict.fromkeys(p.counts, 0), 0, 0))
            for c, n in p.counts.items():
                m.counts[c] = m.counts.get(c, 0) + n
            m.empty += p.empty
            m.rows += p.rows
    return [flag(m, min_count) for m in merged.values()]


def starter_config(
    root: str | Path,
    fmt: str,
    options: dict[str, Any],
    job: str,
    recipe_file: Callable[[str], Path],
    min_count: int = MIN_COUNT,
    command: str = "",
    config_dir: str | Path = ".",
) -> tuple[str, str, list[GroupProfile]]:
    """The YAML text of a config for the dataset at ``root``, the recipe it took, and the profile it was written from.

    The config is the job's recipe (:func:`job_recipe` of the labelled rows; ``recipe_file`` maps its name to its
    file) with its ``data`` section pointed at ``root`` (written
    relative to ``config_dir``, the folder the config goes to: paths in a config are relative to its folder) and
    every group's classes declared in ``data.reader_options.classes`` (likely typos left out, so training names
    them).
    """
    import os

    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}; choose from {sorted(JOBS)}")
    reader = create_reader(fmt, root, options)
    schema = reader.schema()
    tables = [reader.read(split, allow_missing=True) for split in reader.splits()]
    labelled = [t for t in tables if t.labeled]
    if not labelled:
        raise ValueError(f"{root}: no split has labels: nothing to declare classes from")
    profiles = _merged([profile_table(t, schema, min_count) for t in labelled], min_count)
    classes = {}
    for p in profiles:
        typos = {t["class"] for t in p.typos}
        # In the reader's order (a fixed order keeps class indices stable when rows are added), typos left out.
        classes[p.name] = [c for c in p.counts if c not in typos and p.counts[c] > 0]
    rows = sum(len(t) for t in labelled)
    recipe_name = job_recipe(job, rows)
    recipe = yaml.safe_load(recipe_file(recipe_name).read_text())
    data = {k: v for k, v in (recipe.get("data") or {}).items() if k not in ("format", "root", "reader_options")}
    # Only a label table names its classes in its cells; the other layouts fix them (indices, folder names).
    reader_options = {**options, "classes": classes} if fmt == "csv" else dict(options)
    where = os.path.relpath(Path(root).resolve(), Path(config_dir).resolve())
    recipe["data"] = {"format": fmt, "root": where, "reader_options": reader_options, **data}
    missing = sum(len(t.missing) for t in tables)
    optimises = JOBS[job][1]
    size = ""
    if job in SMALL_RECIPES:
        bigger = JOBS[job][0]
        size = (
            f" The recipe for fewer than {SMALL_TABLE} labelled photos ({rows} here); from {SMALL_TABLE}: {bigger}."
            if recipe_name != bigger
            else f" The recipe for {SMALL_TABLE} labelled photos or more ({rows} here); below: {SMALL_RECIPES[job]}."
        )
    head = [
        f"Written by `{command or 'fashattr data init'}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        f"Job {job!r}: recipe {recipe_name}, which optimises {optimises}.{size}",
        f"Rows: {sum(len(t) for t in tables) + missing} in splits {reader.splits()}"
        + (
            f"; {missing} listed images are missing (left out by `data check`, an error in training)" if missing else ""
        ),
        "",
        *(
            [
                "What the labels hold (data.reader_options.classes declares every class below but the likely typos:",
                "a row that names a class not declared stops training with its file, line and the closest class;",
                "fix the row, or add the class to its list if it is meant):",
            ]
            if fmt == "csv"
            else [f"What the labels hold (the {fmt} layout fixes its classes):"]
        ),
        *profile_lines(profiles, min_count),
    ]
    text = "".join(f"# {line}".rstrip() + "\n" for line in head)
    body = yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True, width=120, default_flow_style=None)
    return text + body, recipe_name, profiles
