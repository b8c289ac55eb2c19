"""Label Studio's JSON export (``format: labelstudio``; ``data.root`` is the export file): people's corrections of
fashattr's pre-annotations (``fashattr export-labels --format label-studio``, ``fashattr select --tasks``), read
back for training.

One task per photo. Each annotation's ``choices`` results name a group (``from_name``) and its class(es); a
multi-label group has several. What is read:

- **Several annotations on one task**: the most recently updated wins (option ``winner: first`` takes the first
  made); every task whose annotators disagree on a group is counted and listed
  (:attr:`LabelStudioReader.disagreements`).
- **Skipped and cancelled**: an annotation marked ``was_cancelled`` (Label Studio's "skip") is not a label; a task
  with no other annotation is left out, and counted (:attr:`LabelStudioReader.skipped`).
- **Unlabelled groups**: a group an annotation leaves blank is an unknown label (masked in the loss), not a class.
- **Photos**: ``/data/local-files/?d=REL`` (Label Studio's local files) under ``image_root`` (its
  ``LOCAL_FILES_DOCUMENT_ROOT``; the export's folder by default), ``/data/upload/PROJECT/FILE`` under
  ``upload_root`` (its media ``upload`` folder), a plain path relative to the export's folder. A URL is refused:
  fashattr never downloads.
- **Classes**: the ones seen, sorted, unless ``classes`` (``{group: [names...]}``) or a training config's
  declared classes fix them; a choice that is not a class is an error naming the task and the value.

Options (``data.reader_options``): ``image_root``, ``upload_root``, ``winner`` (``latest`` or ``first``),
``classes``, ``multi_label``, ``split`` (the split name the tasks form; ``train``).
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from pathlib import Path
from typing import Any, ClassVar

from fashattr.data.formats.generic import CsvReader, check_options
from fashattr.data.table import Table
from fashattr.errors import DatasetError

log = logging.getLogger("fashattr")

PATH = "path"
LOCAL_FILES = "/data/local-files/"
UPLOADS = "/data/upload/"


class LabelStudioReader(CsvReader):
    """Tasks of a Label Studio JSON export as rows of a label table; see the module docstring."""

    OPTIONS: ClassVar[dict[str, Any]] = {
        "image_root": None,
        "upload_root": None,
        "winner": "latest",
        "classes": {},
        "multi_label": [],
        "split": "train",
    }

    def __init__(self, root: str | Path, options: dict[str, Any] | None = None) -> None:
        self.file = Path(root)
        if not self.file.is_file():
            raise DatasetError(self.file, "format labelstudio: data.root must be Label Studio's JSON export file")
        ls = check_options(options or {}, self.OPTIONS, "labelstudio")
        if ls["winner"] not in ("latest", "first"):
            raise ValueError(f"reader_options.winner {ls['winner']!r}: choose 'latest' or 'first'")
        self.ls = ls
        self.root = Path(ls["image_root"]) if ls["image_root"] else self.file.parent
        # What CsvReader reads: the path column, a split column, one column per group.
        self.opt = {
            "path_column": PATH,
            "split_column": "split",
            "bbox_columns": ["x1", "y1", "x2", "y2"],
            "groups": None,
            "multi_label": list(ls["multi_label"]),
            "classes": dict(ls["classes"]),
            "image_root": None,
        }
        self.skipped: list[int] = []  # ids of tasks with no annotation but cancelled ones
        self.disagreements: dict[str, list[int]] = {}  # group -> ids of tasks whose annotators differ
        self.task_ids: list[int] = []
        tasks = self._tasks()
        self.columns, self.rows = self._rows(tasks)
        self._schema = self._infer_schema()
        differ = ", ".join(f"{g} {len(ids)} (tasks {ids[:5]})" for g, ids in sorted(self.disagreements.items()))
        log.info(
            "%s: %d Label Studio task(s), %d labelled, %d skipped or cancelled%s",
            self.file,
            len(tasks),
            len(self.rows),
            len(self.skipped),
            f"; annotators disagree on {differ}: the {self.ls['winner']} annotation wins" if differ else "",
        )

    def _tasks(self) -> list[dict[str, Any]]:
        try:
            tasks = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DatasetError(self.file, f"not readable JSON: {e}") from None
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise DatasetError(self.file, "not a Label Studio JSON export (a list of tasks)")
        return tasks

    def _rows(self, tasks: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, str]]]:
        groups: list[str] = []
        rows: list[dict[str, str]] = []
        for n, task in enumerate(tasks):
            task_id = task.get("id", n)
            done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
            if not done:
                self.skipped.append(task_id)
                continue
            answers = [self._choices(a, task_id) for a in done]
            for g in {g for a in answers for g in a}:
                if len({a.get(g) for a in answers if g in a}) > 1:
                    self.disagreements.setdefault(g, []).append(task_id)
            if self.ls["winner"] == "latest":
                won = max(range(len(done)), key=lambda k: str(done[k].get("updated_at") or done[k].get("created_at")))
            else:
                won = min(range(len(done)), key=lambda k: str(done[k].get("created_at") or ""))
            chosen = answers[won]
            for g in chosen:
                if g not in groups:
                    groups.append(g)
            rows.append({PATH: self._path(task, task_id), **chosen})
            self.task_ids.append(task_id)
        for row in rows:
            for g in groups:
                row.setdefault(g, "")
        return [PATH, *groups], rows

    def _choices(self, annotation: dict[str, Any], task_id: Any) -> dict[str, str]:
        """``{group: "class"}`` (multi-label: ``"a|b"``) of one annotation's choices results."""
        out: dict[str, str] = {}
        for r in annotation.get("result") or []:
            if r.get("type") != "choices":
                continue
            choices = (r.get("value") or {}).get("choices") or []
            if any("|" in c for c in choices):
                raise DatasetError(self.file, f"task {task_id}: class name {choices} contains '|'")
            out[str(r.get("from_name"))] = "|".join(sorted(choices))  # order-free: two people's equal sets agree
        return out

    def _path(self, task: dict[str, Any], task_id: Any) -> str:
        """The photo of a task, relative to :attr:`root` (an upload's, absolute)."""
        data = task.get("data") or {}
        ref = data.get("image")
        if not isinstance(ref, str) or not ref:
            raise DatasetError(self.file, f"task {task_id}: no data.image")
        if ref.startswith(("http://", "https://")) and LOCAL_FILES not in ref and UPLOADS not in ref:
            raise DatasetError(self.file, f"task {task_id}: image {ref!r} is a URL; fashattr reads local files only")
        parsed = urllib.parse.urlparse(ref)
        if parsed.path.startswith(LOCAL_FILES):
            rel = urllib.parse.parse_qs(parsed.query).get("d", [""])[0]
            return rel
        if parsed.path.startswith(UPLOADS):
            if not self.ls["upload_root"]:
                raise DatasetError(
                    self.file,
                    f"task {task_id}: image {ref!r} was uploaded to Label Studio; set reader_options.upload_root "
                    "to its media upload folder",
                )
            return str(Path(self.ls["upload_root"]) / parsed.path.removeprefix(UPLOADS))
        return ref

    def _line(self, i: int) -> int | None:
        return None  # a JSON export has tasks, not lines: messages name the task

    def _tag(self, i: int) -> str:
        return f"task {self.task_ids[i]}: "

    def splits(self) -> list[str]:
        return [self.ls["split"]]

    def read(self, split: str, allow_missing: bool = False) -> Table:
        """The export's tasks with an annotation, as split ``reader_options.split``."""
        if split != self.ls["split"]:
            raise DatasetError(
                self.file, f"no split {split!r}; a Label Studio export is one split, {self.ls['split']!r}"
            )
        return super().read(split, allow_missing)
