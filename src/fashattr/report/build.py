"""``fashattr report RUN [RUN ...]``: one folder with report.html, report.json and every figure.

One run: Summary, Curves, Per group, Top losses, Where the model looks, Calibration.
Several runs: the runs side by side (see ``report.multi``).
The page opens from the file system (no network, no script); its figures sit beside it in figures/.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fashattr.fileio import atomic_write_text
from fashattr.report import explain, sections
from fashattr.report.collect import Evaluated, evaluate_run
from fashattr.report.html import Section, page
from fashattr.report.sections import Options, run_steps

log = logging.getLogger("fashattr")
SINGLE_SECTIONS = ("summary", "curves", "groups", "top-losses", "gradcam", "calibration")


def jsonable(value: Any) -> Any:
    """NumPy values as plain JSON ones; NaN and infinities as null (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, Path):
        return str(value)
    return value


def single_report(ev: Evaluated, opt: Options, timings: dict[str, float]) -> tuple[list[Section], dict[str, Any]]:
    """The sections of one run's report and the numbers behind them."""
    metrics = sections.metrics_of(ev)
    steps: list[tuple[str, Callable[[], tuple[Section, dict[str, Any]]]]] = [
        ("summary", lambda: sections.summary_section(ev, metrics, opt)),
        ("curves", lambda: sections.curves_section(ev, opt)),
        ("groups", lambda: sections.groups_section(ev, metrics, opt)),
        ("top-losses", lambda: explain.top_losses_section(ev, opt)),
        ("gradcam", lambda: explain.gradcam_section(ev, opt)),
        ("calibration", lambda: explain.calibration_section(ev, opt)),
    ]
    return run_steps(steps, timings)


def build_report(
    runs: Sequence[str | Path],
    out: str | Path | None = None,
    split: str = "holdout",
    data_root: str | None = None,
    weights: str | None = None,
    device: str = "cpu",
    options: dict[str, Any] | None = None,
) -> Path:
    """Write the report of ``runs`` evaluated on ``split`` into ``out`` (default ``RUN/report`` for
    one run, ``report`` for several) and return the path of report.html.

    Args:
        runs: run folders written by ``fashattr train`` (finished or not).
        split: ``holdout`` (the run's selection holdout), ``test_holdout``, or a split of the dataset;
            a split without labels gives predictions and distributions only.
        data_root: the dataset root, if not the one in the runs' configs.
        weights: ``best`` or ``last``; default best, or last for a run that stopped before its end.
        options: fields of :class:`sections.Options` (``gradcam_images``, ``resamples``, ``seed``, ...).

    Raises:
        FashattrError: a folder is not a run, or has no weights.
    """
    if not runs:
        raise ValueError("report needs at least one run folder")
    out = Path(out) if out else (Path(runs[0]) / "report" if len(runs) == 1 else Path("report"))
    opt = Options(out=out, **(options or {}))
    timings: dict[str, float] = {}
    start = time.perf_counter()
    evaluated = [evaluate_run(r, split, data_root, weights, device) for r in runs]
    timings["evaluate"] = round(time.perf_counter() - start, 3)
    out.mkdir(parents=True, exist_ok=True)
    if len(evaluated) == 1:
        ev = evaluated[0]
        body, data = single_report(ev, opt, timings)
        title = f"fashattr report: {ev.info.name}"
    else:
        from fashattr.report import multi

        body, data = multi.compare_report(evaluated, opt, timings)
        title = "fashattr report: " + " vs ".join(e.info.name for e in evaluated)
    first = evaluated[0]
    models = "; ".join(
        f"{e.info.name}: {e.info.backbone} at {e.pixels.shape[1]} px"
        + (f" (trained at {e.info.image_size})" if e.pixels.shape[1] != e.info.image_size else "")
        + f", {e.weights}.safetensors"
        for e in evaluated
    )
    subtitle = f"split {first.split!r}, {len(first.paths)} images; {models}"
    html_path = out / "report.html"
    atomic_write_text(html_path, page(title, subtitle, body))
    timings["total"] = round(time.perf_counter() - start, 3)
    report = {
        "title": title,
        "runs": [str(e.info.path) for e in evaluated],
        "weights": {e.info.name: e.weights for e in evaluated},
        "split": first.split,
        "images": first.paths,
        "skipped_images": first.skipped,
        "sections": data,
        "seconds": timings,
    }
    atomic_write_text(out / "report.json", json.dumps(jsonable(report), indent=1) + "\n")
    log.info("report written to %s in %.1f s", html_path, timings["total"])
    return html_path
