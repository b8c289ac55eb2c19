"""``calibration.json``: a run's fitted decoding, read back for the weights it was fitted on, and the bundle
config's ``decoding`` block made from it (the format :mod:`fashattr.portable.decoding` applies)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from fashattr.errors import FashattrError
from fashattr.portable.bundle import file_sha256

log = logging.getLogger("fashattr")

CALIBRATION = "calibration.json"
FORMAT, VERSION = "fashattr-calibration", 1


class CalibrationError(FashattrError, ValueError):
    """A ``calibration.json`` that cannot be used (unreadable, another format, or fitted on other weights)."""

    def __init__(self, file: str | Path, message: str) -> None:
        self.file, self.message = str(file), message
        super().__init__(f"{self.file}: {message}")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def load_calibration(
    run_dir: str | Path, weights: str = "best", image_size: int | None = None
) -> dict[str, Any] | None:
    """``run_dir/calibration.json`` when it applies to ``{weights}.safetensors``, else None.

    A calibration fitted for the other weights file (``best`` vs ``last``) is not applied (a warning
    says so); one whose weights file has changed since is refused, and so is one fitted on images of another
    size than ``image_size`` (the size the run is used at now: ``data.eval_size`` changed since).

    Raises:
        CalibrationError: unreadable, not a calibration file, or fitted on weights or a size that have changed.
    """
    run_dir = Path(run_dir)
    path = run_dir / CALIBRATION
    if not path.is_file():
        return None
    try:
        cal = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CalibrationError(path, f"not readable JSON: {e}") from None
    if not isinstance(cal, dict) or cal.get("format") != FORMAT:
        raise CalibrationError(path, f"not a fashattr calibration file (format {FORMAT!r} expected)")
    if not isinstance(cal.get("version"), int) or cal["version"] > VERSION:
        raise CalibrationError(path, f"version {cal.get('version')!r}: written by a newer fashattr; upgrade")
    fitted = cal.get("fitted_on") or {}
    name = f"{weights}.safetensors"
    if fitted.get("weights") != name:
        log.warning("%s was fitted for %s, not %s: not applied", path, fitted.get("weights"), name)
        return None
    found = file_sha256(run_dir / name) if (run_dir / name).is_file() else None
    if found != fitted.get("weights_sha256"):
        raise CalibrationError(
            path,
            f"fitted on {name} with sha256 {fitted.get('weights_sha256')}, but that file is now {found} (trained "
            "further?); run `fashattr calibrate RUN` again, or delete calibration.json",
        )
    fitted_size = fitted.get("image_size")  # absent in files written before data.eval_size existed
    if image_size is not None and fitted_size is not None and fitted_size != image_size:
        raise CalibrationError(
            path,
            f"fitted on images at {fitted_size} px, but the run is now used at {image_size} px (data.eval_size "
            "changed?); run `fashattr calibrate RUN` again, or delete calibration.json",
        )
    return cal


def bundle_decoding(cal: dict[str, Any] | None) -> dict[str, Any]:
    """The bundle config's ``decoding`` block for a calibration (the format :mod:`fashattr.portable.decoding`
    applies); without one, the raw model's (threshold 0, no temperature, no adjustment)."""
    block: dict[str, Any] = {"multi_label_threshold_logit": 0.0, "calibration": None, "logit_adjust": None}
    if cal is None:
        return block
    modes = {
        m: {
            "logit_adjust": {"offsets": v["offsets"]} if v["offsets"] else None,
            "calibration": {"temperature": v["temperature"]},
            "tau": v["tau"],
        }
        for m, v in cal["modes"].items()
    }
    d = cal["default"]
    fitted = cal.get("fitted_on") or {}
    return {
        **block,
        "calibration": modes[d]["calibration"],
        "logit_adjust": modes[d]["logit_adjust"],
        "thresholds": cal.get("thresholds") or {},
        "modes": modes,
        "default": d,
        "fitted_on": {k: fitted.get(k) for k in ("split", "images", "image_size", "weights", "created")},
    }


def with_default(block: dict[str, Any], mode: str) -> dict[str, Any]:
    """A bundle ``decoding`` block whose default is ``mode`` (``export --decode``): the top-level keys repeat the
    mode's, so a reader that knows no modes (the bundle's predict_onnx.py) decodes as the runtimes do; ``none``
    is the raw model.

    Raises:
        ValueError: a mode the block does not carry, naming the ones it does.
    """
    modes = block.get("modes") or {}
    if mode != "none" and mode not in modes:
        hint = "" if modes else " (this run has no decoding modes: run `fashattr calibrate RUN` first)"
        raise ValueError(f"unknown decoding mode {mode!r}; choose from {['none', *modes]}{hint}")
    if mode == "none":
        return {**block, "calibration": None, "logit_adjust": None, "default": "none"}
    chosen = modes[mode]
    return {**block, "calibration": chosen["calibration"], "logit_adjust": chosen["logit_adjust"], "default": mode}
