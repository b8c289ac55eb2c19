"""Per-image CPU cost of what `fashattr tag` does beside the model: decoding a FashionDataset JPEG to
the 96 px letterboxed pixels (`images.load_presized`, 200 real photos, one thread), and turning
logits into labels and database rows.

`decoding.decode` (top-5) plus `catalog.batch.prediction_rows`, on 32-image batches of random
logits for the FashionDataset schema, timed alone (no model, no database). Prints one JSON line and
writes benchmarks/results/tag_labels.json.

    python benchmarks/tag_labels.py
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from fashattr.catalog.batch import prediction_rows
from fashattr.portable import decoding, images
from fashattr.schema import AI6126_GROUPS

RESULTS = Path(__file__).resolve().parent / "results"
PHOTOS = Path(os.environ.get("FASHATTR_DATA") or Path(__file__).resolve().parents[2] / "shared/data/FashionDataset")


def jpeg_ms(n: int = 200, size: int = 96) -> float:
    """Milliseconds per real photo to decode and letterbox it, as tag's decode threads do."""
    files = sorted((PHOTOS / "img").glob("*.jpg"))[:n]
    if not files:
        raise FileNotFoundError(f"no FashionDataset photos under {PHOTOS / 'img'} (set FASHATTR_DATA)")
    fill = images.fill_color((0.485, 0.456, 0.406))
    start = time.perf_counter()
    for f in files:
        images.load_presized(f, size, fill=fill)
    return round((time.perf_counter() - start) / len(files) * 1e3, 3)


def main(rounds: int = 300, batch: int = 32) -> dict[str, float]:
    groups = [{"name": k, "classes": list(v), "kind": "single"} for k, v in AI6126_GROUPS.items()]
    config = {"schema": {"groups": groups}, "decoding": {}}
    rng = np.random.default_rng(0)
    logits = {g["name"]: rng.normal(size=(batch, len(g["classes"]))).astype(np.float32) for g in groups}
    out: dict[str, float] = {"batch": batch, "rounds": rounds, "loadavg_before": os.getloadavg()[0]}
    out["jpeg_decode_96px_ms_per_image"] = jpeg_ms()
    for top_k in (1, 5):
        start = time.perf_counter()
        for _ in range(rounds):
            decoding.decode(config, logits, top_k=top_k)
        out[f"decode_top{top_k}_ms_per_image"] = round((time.perf_counter() - start) / rounds / batch * 1e3, 4)
    start = time.perf_counter()
    for _ in range(rounds):
        for record in decoding.decode(config, logits, top_k=5):
            prediction_rows("0" * 64, "model", record, None)
    out["decode_top5_and_rows_ms_per_image"] = round((time.perf_counter() - start) / rounds / batch * 1e3, 4)
    return out


if __name__ == "__main__":
    result = main()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tag_labels.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
