"""A bundle's model card (``README.md``): what the model predicts, what it was trained on and from which weights,
its metrics, how to use it, and its limits — written from the bundle's ``config.json`` alone."""

from __future__ import annotations

from typing import Any

from fashattr.portable.bundle import Preprocess


def model_card(config: dict[str, Any]) -> str:
    """README.md of a bundle: what the model is, what it was trained on, its metrics, use and limits."""
    src, m, pre = config["source"], config["metrics"], Preprocess.of(config)
    data = src.get("trained_on", {})
    groups = config["schema"]["groups"]
    test, sel = _metric_rows(m.get("test_holdout")), _metric_rows(m.get("selection_holdout"))
    lines = [
        f"# fashattr model: {config['model']['backbone']} — {len(groups)} attribute groups",
        "",
        f"Exported from run `{src['run']}` ({src['weights']} weights) by fashattr {config['fashattr_version']};"
        f" bundle format {config['format_version']}. The model id is `bundle_hash` in `hashes.json`.",
        "",
        "## What it predicts",
        "",
        "| group | kind | classes |",
        "|---|---|---|",
        *[f"| {g['name']} | {g['kind']}-label | {', '.join(g['classes'])} |" for g in groups],
        "",
        "## Training",
        "",
        f"- data: `{data.get('format')}` layout, root `{data.get('root')}`, split `{data.get('train_split')}`: "
        f"{data.get('train_images', 'unknown')} training images, {data.get('selection_images', 'unknown')} in the"
        f" selection holdout, {data.get('test_holdout_images', 0)} in the test holdout",
        f"- recipe: {src.get('recipe') or 'not named'}; backbone `{config['model']['backbone']}` from"
        f" {_init_words(src)};"
        f" {src.get('epochs_run')} of {src.get('epochs')} epochs; loss `{src['loss']['name']}`"
        f" (logit adjustment tau {src['loss']['logit_adjust_tau']}); {src['optim']['name']} lr {src['optim']['lr']}",
        f"- input: {pre.image_size} px square"
        + (
            f" (trained at {trained} px: data.eval_size)"
            if (trained := data.get("image_size")) not in (None, pre.image_size)
            else ""
        )
        + f", letterboxed (aspect kept, bars {pre.fill}), mean"
        f" {list(pre.mean)}, std {list(pre.std)}"
        + (f", cropped to the garment box + {pre.bbox_margin}" if pre.bbox_crop else "")
        + (
            f"; background removed ({pre.background['method']}) and painted {tuple(pre.background['fill'])}"
            if pre.background
            else ""
        ),
        "",
        "## Metrics",
        "",
        "The test holdout was never trained on nor used to choose the epoch: it is the honest number. The selection"
        " holdout chose the epoch, so its number is optimistic.",
        "",
    ]
    if test or sel:
        lines += ["| metric | test holdout | selection holdout |", "|---|---|---|"]
        for k in dict.fromkeys([*test, *sel]):
            lines.append(f"| {k} | {_fmt(test.get(k))} | {_fmt(sel.get(k))} |")
    else:
        lines.append("No metrics were recorded for this run (no summary.json).")
    q = (config.get("onnx") or {}).get("int8_metrics")
    if q:
        lines += [
            "",
            f"`model.int8.onnx` (static int8) against `model.onnx` (fp32) on the {q['split']} ({q['images']} images):"
            f" avg_class_acc {_fmt(q['fp32'].get('avg_class_acc'))} -> {_fmt(q['int8'].get('avg_class_acc'))}"
            f" ({q['avg_class_acc_change_points']:+.2f} points), overall_acc {_fmt(q['fp32'].get('overall_acc'))}"
            f" -> {_fmt(q['int8'].get('overall_acc'))}.",
        ]
    lines += _decoding_lines(config.get("decoding") or {})
    lines += [
        "",
        "## Intended use and limits",
        "",
        "- Tagging product photos of a single garment with the attributes above, as a suggestion a person can"
        " check; not for decisions about people.",
        "- It knows only these classes: every photo gets one of each single-label group's classes, even when none"
        " fits. Accuracy on photos unlike the training data (other cameras, several garments, people in"
        " street scenes, drawings) is unmeasured.",
        "- Rare classes are recognised less often than common ones: compare the per-class numbers"
        " (`fashattr eval`) before relying on one.",
        "",
        "## Using it",
        "",
        "```",
        "fashattr predict BUNDLE photos/ --out predictions.jsonl            # torch",
        "python predict_onnx.py BUNDLE photos/ --out predictions.jsonl      # onnxruntime + numpy + Pillow only",
        "```",
        "",
    ]
    return "\n".join(lines)


def _init_words(source: dict[str, Any]) -> str:
    """The model card's words for where the backbone's initial weights came from."""
    if not source.get("pretrained_init"):
        return "random initialisation (from scratch)"
    w = source.get("backbone_weights") or {}
    sha = (w.get("sha256") or "")[:12]
    if w.get("package"):
        return f"ImageNet weights of the package `{w['package']}` {w.get('version')} (sha256 {sha})"
    if w.get("file"):
        return f"pretrained weights from `{w['file']}` (sha256 {sha})"
    return "pretrained weights (timm's hub)" if w.get("source") == "hub" else "pretrained weights"


def _metric_rows(metrics: dict[str, Any] | None) -> dict[str, float]:
    if not metrics:
        return {}
    keys = ["avg_class_acc", "overall_acc", "exact_match"]
    keys += sorted(k for k in metrics if k.endswith("/acc") or k.endswith("/avg_class_acc"))
    return {k: metrics[k] for k in keys if isinstance(metrics.get(k), int | float)}


def _decoding_lines(dec: dict[str, Any]) -> list[str]:
    """The model card's decoding paragraph: the modes `fashattr calibrate` fitted, if any."""
    modes = dec.get("modes") or {}
    if not modes:
        return []
    fitted = dec.get("fitted_on") or {}
    lines = [
        "",
        "## Decoding",
        "",
        f"Fitted by `fashattr calibrate` on {fitted.get('images')} images of the {fitted.get('split')} split: a"
        " temperature per group, post-hoc logit adjustment (logits - tau * log prior) per single-label group"
        + (", a logit threshold per multi-label class (best F1)" if dec.get("thresholds") else "")
        + f". Default mode: `{dec.get('default')}`; choose with `--decode` (`none` is the raw model, which the"
        " metrics above measure).",
        "",
    ]
    for name, mode in modes.items():
        taus = ", ".join(f"{g} {t:+.2f}" for g, t in (mode.get("tau") or {}).items())
        what = {"accuracy": "best overall accuracy", "balanced": "best average per-class accuracy"}.get(name, name)
        lines.append(f"- `{name}` ({what}): tau {taus or 'none'}")
    return lines


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"
