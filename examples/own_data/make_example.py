"""Rebuild this example: 120 synthetic garments (fashattr.data.synthetic) as a shop's photo folder and label table.

    python examples/own_data/make_example.py          # writes photos/ and labels.csv beside this file
    fashattr data init examples/own_data/labels.csv --job shop --out examples/own_data/fashattr.yaml --force

The photos are drawn so that every attribute can be seen (docs/own_data.md walks through them); labels.csv names
classes as a shop would, relative to its own folder, with a few empty cells: a tagger left fabric and fit blank.
"""

from __future__ import annotations

import csv
import random
import shutil
import tempfile
from pathlib import Path

from fashattr.data.synthetic import synthesize
from fashattr.schema import ai6126_schema

HERE = Path(__file__).resolve().parent
N, SIZE, SEED = 120, 64, 0


def main() -> None:
    schema = ai6126_schema()
    rng = random.Random(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        root = synthesize(tmp, N, size=SIZE, seed=SEED, val=0.0, test=0.0)
        paths = (root / "split" / "train.txt").read_text().split()
        attrs = (root / "split" / "train_attr.txt").read_text().splitlines()
        photos = HERE / "photos"
        shutil.rmtree(photos, ignore_errors=True)
        photos.mkdir()
        with open(HERE / "labels.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["path", *schema.names])
            for i, (rel, line) in enumerate(zip(paths, attrs, strict=True)):
                name = f"item_{i:03d}{Path(rel).suffix}"
                shutil.copy(root / rel, photos / name)
                labels = [g.classes[int(k)] for g, k in zip(schema.groups, line.split(), strict=True)]
                if rng.random() < 0.05:
                    labels[rng.choice([4, 5])] = ""  # fabric or fit left blank
                w.writerow([f"photos/{name}", *labels])
    print(f"wrote {HERE / 'labels.csv'} and {N} photos in {HERE / 'photos'}")


if __name__ == "__main__":
    main()
