"""Logits to answers: the decoding block of a bundle's config.json, applied the same way by every backend.

The decoding block of config.json (``fashattr calibrate RUN`` fills it; an uncalibrated run has the first
line only, older bundles may lack the rest): ``multi_label_threshold_logit`` (one logit threshold for every
multi-label class), ``calibration`` ({"temperature": {group: T}}), ``logit_adjust`` ({"offsets": {group:
[per class]}}), ``thresholds`` ({group: [per-class logit thresholds]}, multi-label groups), ``modes``
({name: {"logit_adjust": ..., "calibration": ...}}: e.g. "accuracy" and "balanced") and ``default`` (the
mode whose offsets and temperatures the top-level keys repeat, so a reader that knows no modes decodes it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# A single-label answer whose probability is below this is marked "unsure": on calibrated probabilities
# (`fashattr calibrate`'s temperatures), one more likely wrong than right. ``decoding.unsure_below`` overrides it.
UNSURE_BELOW = 0.5
NO_DECODING = "none"  # the raw model: no offsets, no temperature, threshold 0 (an uncalibrated run's decoding)


def decode_modes(config: dict[str, Any]) -> list[str]:
    """The decoding modes a bundle carries (e.g. ``["accuracy", "balanced"]``); ``[]`` for none."""
    return list((config.get("decoding") or {}).get("modes") or {})


def default_decode(config: dict[str, Any]) -> str | None:
    """The mode used when none is asked for (``decoding.default``); None when the bundle carries no modes."""
    dec = config.get("decoding") or {}
    return dec.get("default") if dec.get("modes") else None


def decoding_for(config: dict[str, Any], mode: str | None = None) -> tuple[str | None, dict[str, Any]]:
    """The decoding block that ``mode`` selects, and the mode's name as predictions record it.

    ``None``: the bundle's default mode (or its top-level block, named None, when it has no modes);
    ``"none"``: the raw model; a name of ``decoding.modes``: the top-level block with that mode's keys.

    Raises:
        ValueError: an unknown mode, naming the choices.
    """
    dec = config.get("decoding") or {}
    modes = dec.get("modes") or {}
    if mode is None:
        mode = default_decode(config)
        if mode is None or mode not in modes:
            return None, dec
    if mode == NO_DECODING:
        return NO_DECODING, {}
    if mode not in modes:
        hint = "" if modes else " (this model has no decoding modes: run `fashattr calibrate RUN`, then export again)"
        raise ValueError(f"unknown decoding mode {mode!r}; choose from {[NO_DECODING, *modes]}{hint}")
    return mode, {**dec, **modes[mode]}


def decision_logits(
    config: dict[str, Any], logits: dict[str, np.ndarray], mode: str | None = None
) -> dict[str, np.ndarray]:
    """The scores decoding decides on, per group: single-label logits plus the ``logit_adjust`` offsets
    (the decoded class is their argmax); multi-label logits plus offsets minus the per-class ``thresholds``
    (or ``multi_label_threshold_logit``), so a class is present when its score is > 0. Temperatures, which
    change no decision, are not applied. ``fashattr eval`` computes its metrics on these."""
    dec = decoding_for(config, mode)[1]
    adjust = (dec.get("logit_adjust") or {}).get("offsets", {})
    thresholds = dec.get("thresholds") or {}
    threshold = float(dec.get("multi_label_threshold_logit", 0.0))
    out = {}
    for g in config["schema"]["groups"]:
        z = np.asarray(logits[g["name"]], dtype=np.float64)
        if g["name"] in adjust:
            z = z + np.asarray(adjust[g["name"]], dtype=np.float64)
        if g["kind"] != "single":
            z = z - (np.asarray(thresholds[g["name"]], dtype=np.float64) if g["name"] in thresholds else threshold)
        out[g["name"]] = z
    return out


def adjusted_logits(
    config: dict[str, Any], logits: dict[str, np.ndarray], mode: str | None = None
) -> dict[str, np.ndarray]:
    """Logits after the bundle's decoding (``mode`` as in :func:`decoding_for`): ``logit_adjust`` offsets
    added per class, then ``calibration`` temperatures divided out, both per group (``{"offsets": {group:
    [per class]}}``, ``{"temperature": {group: T}}``); groups not named are left as they are. The softmax
    (single-label) or sigmoid (multi-label) of these are the probabilities predictions report."""
    dec = decoding_for(config, mode)[1]
    adjust = (dec.get("logit_adjust") or {}).get("offsets", {})
    temps = (dec.get("calibration") or {}).get("temperature", {})
    out = {}
    for g in config["schema"]["groups"]:
        z = np.asarray(logits[g["name"]], dtype=np.float64)
        if g["name"] in adjust:
            z = z + np.asarray(adjust[g["name"]], dtype=np.float64)
        if g["name"] in temps:
            z = z / float(temps[g["name"]])
        out[g["name"]] = z
    return out


def decode(
    config: dict[str, Any], logits: dict[str, np.ndarray], top_k: int = 1, mode: str | None = None
) -> list[dict[str, Any]]:
    """The JSON of ``fashattr predict`` per image (without its ``path``): ``{"groups": {group: ...},
    "decoding": name}`` (``name``: the mode used, see :func:`decoding_for`; None for a bundle without modes).

    Single-label groups: ``{"class", "index", "prob", "unsure"}`` of the top class after the logit adjustment,
    ``unsure`` when ``prob`` is below ``decoding.unsure_below`` (:data:`UNSURE_BELOW`) (``top_k`` > 1 adds
    ``"top"``: the ``top_k`` best as ``{"class", "index", "prob"}``, best first). Multi-label groups: a list
    of such dicts, one per class whose logit (plus offset) exceeds its threshold (``decoding.thresholds``,
    else ``multi_label_threshold_logit``; 0: probability > 0.5). Probabilities come from the adjusted,
    temperature-scaled logits, in float64, rounded to 6 decimals, as in fashattr.

    Raises:
        ValueError: an unknown ``mode``, naming the choices.
    """
    name = decoding_for(config, mode)[0]
    decide = decision_logits(config, logits, mode)
    z = adjusted_logits(config, logits, mode)
    groups = config["schema"]["groups"]
    unsure_below = float((config.get("decoding") or {}).get("unsure_below", UNSURE_BELOW))
    n = len(next(iter(z.values()))) if z else 0
    probs = {}
    for g in groups:
        s = z[g["name"]]
        if g["kind"] == "single":
            e = np.exp(s - s.max(1, keepdims=True))
            probs[g["name"]] = e / e.sum(1, keepdims=True)
        else:
            probs[g["name"]] = 1.0 / (1.0 + np.exp(-s))
    results: list[dict[str, Any]] = []
    for i in range(n):
        out: dict[str, Any] = {}
        for g in groups:
            p, classes = probs[g["name"]][i], g["classes"]

            def entry(k: int, p: np.ndarray = p, classes: list[str] = classes) -> dict[str, Any]:
                return {"class": classes[k], "index": int(k), "prob": round(float(p[k]), 6)}

            if g["kind"] == "single":
                k = int(p.argmax())
                out[g["name"]] = {**entry(k), "unsure": bool(p[k] < unsure_below)}
                if top_k > 1:
                    out[g["name"]]["top"] = [entry(int(j)) for j in np.argsort(-p, kind="stable")[:top_k]]
            else:
                out[g["name"]] = [entry(int(k)) for k in np.flatnonzero(decide[g["name"]][i] > 0)]
        results.append({"groups": out, "decoding": name})
    return results
