"""Prediction files written as they go: JSON Lines, CSV, or one JSON array; and the streaming driver
behind ``fashattr predict PATHS``: progress bar, bad images reported, constant memory."""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fashattr.deploy.runtime import OnBadImage, Runtime
from fashattr.portable.images import IMAGE_SUFFIXES, expand_paths

__all__ = ["IMAGE_SUFFIXES", "OUTPUT_SUFFIXES", "PredictionWriter", "expand_paths", "predict_to_file"]
from fashattr.schema import Schema

OUTPUT_SUFFIXES = (".jsonl", ".csv", ".json")


class PredictionWriter:
    """Writes one record at a time to ``.jsonl`` / ``.csv`` / ``.json`` and flushes each batch.

    A record is ``{"path", "groups"}`` or ``{"path", "error"}``. CSV columns: ``path``, then
    ``{group}`` and ``{group}_prob`` per group (multi-label: classes joined by ``|``), then ``error``.
    """

    def __init__(self, path: str | Path, schema: Schema) -> None:
        self.path, self.schema = Path(path), schema
        if self.path.suffix not in OUTPUT_SUFFIXES:
            raise ValueError(f"{self.path}: output must end in {', '.join(OUTPUT_SUFFIXES)}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f: IO[str] = open(self.path, "w", newline="" if self.path.suffix == ".csv" else None)  # noqa: SIM115
        self.count = 0
        if self.path.suffix == ".csv":
            self.csv = csv.writer(self.f)
            self.csv.writerow(["path"] + [f"{g}{s}" for g in schema.names for s in ("", "_prob")] + ["error"])
        elif self.path.suffix == ".json":
            self.f.write("[")

    def write(self, record: dict[str, Any]) -> None:
        suffix = self.path.suffix
        if suffix == ".jsonl":
            self.f.write(json.dumps(record) + "\n")
        elif suffix == ".json":
            self.f.write(("," if self.count else "") + "\n" + json.dumps(record))
        else:
            self.csv.writerow(self._row(record))
        self.count += 1

    def _row(self, record: dict[str, Any]) -> list[str]:
        row = [record["path"]]
        groups = record.get("groups")
        for g in self.schema.groups:
            if groups is None:
                row += ["", ""]
            elif g.kind == "single":
                v = groups[g.name]
                row += [v["class"], f"{v['prob']:.6f}"]
            else:
                v = groups[g.name]
                row += ["|".join(x["class"] for x in v), "|".join(f"{x['prob']:.6f}" for x in v)]
        return [*row, record.get("error", "")]

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        if self.path.suffix == ".json":
            self.f.write("\n]\n")
        self.f.close()


@dataclass
class PredictSummary:
    predicted: int
    errors: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return (self.predicted + self.errors) / self.seconds if self.seconds > 0 else 0.0


def predict_to_file(
    runtime: Runtime,
    paths: list[Path],
    out: str | Path,
    batch_size: int = 32,
    workers: int = 2,
    on_bad_image: OnBadImage = "report",
    progress: bool = True,
) -> PredictSummary:
    """Predict ``paths`` into ``out`` as the records come: a tqdm bar (images/s, ETA, errors so far)
    and one ``warning: FILE: reason`` line per bad image on stderr.

    Raises:
        ImageError: with ``on_bad_image="error"``, at the first bad image (records before it are kept).
    """
    from tqdm import tqdm

    writer = PredictionWriter(out, runtime.schema)
    errors = done = 0
    start = time.perf_counter()
    bar = tqdm(total=len(paths), unit="img", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    bar.set_postfix(errors=0)
    try:
        for record in runtime.predict_files(paths, batch_size, workers, on_bad_image):
            writer.write(record)
            done += 1
            if "error" in record:
                errors += 1
                tqdm.write(f"warning: {record['path']}: {record['error']}", file=sys.stderr)
                bar.set_postfix(errors=errors, refresh=False)
            bar.update(1)
            if done % batch_size == 0:
                writer.flush()
    finally:
        bar.close()
        writer.close()
    return PredictSummary(done - errors, errors, time.perf_counter() - start)
