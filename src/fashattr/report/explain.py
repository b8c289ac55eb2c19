"""A single run's report, the image sections: Top losses, Where the model looks (Grad-CAM), Calibration."""

from __future__ import annotations

from typing import Any

import numpy as np

from fashattr.calibration.temperature import fit_temperature, reliability, sigmoid, softmax
from fashattr.report import figures, stats
from fashattr.report.collect import Evaluated
from fashattr.report.html import Section, esc, figure, note, num, table
from fashattr.report.sections import Options

GRADCAM_ROWS = 8  # images per Grad-CAM figure (one row each)


def probabilities(kind: str, logits: np.ndarray) -> np.ndarray:
    return softmax(logits) if kind == "single" else sigmoid(logits)


def image_losses(ev: Evaluated) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per group each image's loss under the shown probabilities, and their sum (NaN: nothing known)."""
    assert ev.labels is not None
    per = {g.name: stats.per_image_loss(g, ev.labels[g.name], ev.logits[g.name]) for g in ev.schema.groups}
    stacked = np.stack(list(per.values()), axis=1)
    total = np.where(np.isnan(stacked).all(1), np.nan, np.nansum(stacked, axis=1))
    return per, total


def verdict(ev: Evaluated, group: str, i: int) -> dict[str, Any]:
    """What the model said about image ``i`` in ``group``: predicted and true classes, probabilities, right."""
    g = ev.schema[group]
    z = ev.logits[group][i]
    p = probabilities(g.kind, z[None])[0]
    t = None if ev.labels is None else ev.labels[group][i]
    if g.kind == "single":
        pred = int(z.argmax())
        known = t is not None and int(t) >= 0
        return {
            "predicted": g.classes[pred],
            "prob": float(p[pred]),
            "true": g.classes[int(t)] if known else None,  # type: ignore[arg-type]
            "true_prob": float(p[int(t)]) if known else None,  # type: ignore[arg-type]
            "right": None if not known else pred == int(t),  # type: ignore[arg-type]
        }
    top = int(z.argmax())  # the class Grad-CAM explains for a multi-label head
    present = [] if t is None else [g.classes[c] for c in np.flatnonzero(np.asarray(t) == 1)]
    predicted = [g.classes[c] for c in np.flatnonzero(z > 0)]
    right = (
        None
        if t is None or (np.asarray(t) < 0).all()
        else bool(((z > 0) == (np.asarray(t) == 1))[np.asarray(t) >= 0].all())
    )
    return {
        "predicted": "|".join(predicted) or "(none)",
        "top": g.classes[top],
        "prob": float(p[top]),
        "true": "|".join(present) or "(none)" if t is not None else None,
        "right": right,
    }


def short(text: str, width: int = 18) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _grid(ev: Evaluated, rows: np.ndarray, captions: list[str], colors: list[str], name: str, opt: Options) -> dict:
    fig = figures.image_grid_figure(ev.pixels[rows], captions, colors)
    return figures.save(fig, opt.figures, name, photo=True)


def top_losses_section(ev: Evaluated, opt: Options) -> tuple[Section, dict[str, Any]]:
    """The images with the largest loss, overall and per group, with true / predicted / probability."""
    if ev.labels is None:
        return Section("top-losses", "Top losses", note("no labels on this split: no loss to rank by.")), {}
    per, total = image_losses(ev)
    out: dict[str, Any] = {"overall": [], "groups": {}}
    order = np.argsort(-np.nan_to_num(total, nan=-np.inf), kind="stable")[: opt.top_losses]
    captions, colors = [], []
    for i in order:
        worst = max(per, key=lambda g: -np.inf if np.isnan(per[g][i]) else per[g][i])
        v = verdict(ev, worst, int(i))
        captions.append(
            f"loss {total[i]:.2f}\n{short(worst, 10)}: {short(str(v['true']), 12)}"
            f"\n\u2192 {short(v['predicted'])} {v['prob']:.2f}"
        )
        colors.append(figures.WRONG if v["right"] is False else figures.RIGHT)
        out["overall"].append({"path": ev.paths[i], "loss": float(total[i]), "worst_group": worst, **v})
    files = _grid(ev, order, captions, colors, "top_losses_overall", opt)
    out["overall_figure"] = files
    body = '<p class="muted">Loss: the cross-entropy of the probabilities this report shows (softmax of the model\'s '
    body += "logits; summed binary cross-entropy for multi-label groups), summed over groups for the overall grid.</p>"
    body += "<h3>Overall</h3>" + figure(
        files, "top losses overall", "caption: loss, the worst group: true \u2192 predicted, probability"
    )
    for g in ev.schema.groups:
        loss = per[g.name]
        order = np.argsort(-np.nan_to_num(loss, nan=-np.inf), kind="stable")[: max(4, opt.top_losses // 2)]
        order = order[~np.isnan(loss[order])]
        if not len(order):
            continue
        captions, colors, rows = [], [], []
        for i in order:
            v = verdict(ev, g.name, int(i))
            tp = f" {v['true_prob']:.2f}" if v.get("true_prob") is not None else ""
            captions.append(
                f"true {short(str(v['true']))}{tp}\npred {short(v['predicted'])} {v['prob']:.2f}\nloss {loss[i]:.2f}"
            )
            colors.append(figures.WRONG if v["right"] is False else figures.RIGHT)
            rows.append({"path": ev.paths[i], "loss": float(loss[i]), **v})
        slug = "".join(ch if ch.isalnum() else "_" for ch in g.name)
        files = _grid(ev, order, captions, colors, f"top_losses_{slug}", opt)
        out["groups"][g.name] = {"images": rows, "figure": files}
        body += f"<h3>{esc(g.name)}</h3>" + figure(files, f"top losses {g.name}")
    return Section("top-losses", "Top losses", body), out


def gradcam_rows(ev: Evaluated, opt: Options) -> tuple[np.ndarray, list[str]]:
    """The images to explain: the largest overall losses, then a few with every group right (the most
    confident first); without labels, the first images of the split. Each with a row title."""
    n = min(opt.gradcam_images, len(ev.paths))
    if ev.labels is None:
        return np.arange(n), [f"#{i}" for i in range(n)]
    _, total = image_losses(ev)
    right = np.ones(len(total), bool)
    for g in ev.schema.groups:
        t, z = ev.labels[g.name], ev.logits[g.name]
        right &= ((z.argmax(1) == t) | (t < 0)) if g.kind == "single" else (((z > 0) == (t == 1)) | (t < 0)).all(1)
    confidence = np.mean([probabilities(g.kind, ev.logits[g.name]).max(1) for g in ev.schema.groups], axis=0)
    n_right = min(opt.gradcam_correct, int(right.sum()), n)
    correct = np.flatnonzero(right)[np.argsort(-confidence[right], kind="stable")][:n_right]
    worst = [i for i in np.argsort(-np.nan_to_num(total, nan=-np.inf), kind="stable") if i not in set(correct)]
    worst = worst[: n - n_right]
    rows = np.array([*worst, *correct], dtype=np.int64)
    titles = [f"loss #{k + 1}: {total[i]:.2f}" for k, i in enumerate(worst)] + ["every group right"] * n_right
    return rows, titles


def gradcam_section(ev: Evaluated, opt: Options) -> tuple[Section, dict[str, Any]]:
    """Grad-CAM per head (each group explains its own predicted / top class) on the chosen images."""
    from fashattr.report.gradcam import gradcam_pixels, overlay, target_layer

    model = ev.runtime.backend.model  # type: ignore[attr-defined]
    layer_name = target_layer(model)[1]
    family = (
        "vision transformer: last block's tokens laid on the patch grid"
        if ".blocks." in layer_name
        else "CNN: last feature map"
    )
    rows, titles = gradcam_rows(ev, opt)
    pre = ev.runtime.prep  # type: ignore[attr-defined]
    grid = _map_size(model, target_layer(model)[0], ev.pixels[:1], pre.mean, pre.std)
    body = (
        f'<p class="muted">Grad-CAM on <code>{esc(layer_name)}</code> ({esc(family)}; a {grid[0]}\u00d7{grid[1]} map '
        f"at {ev.pixels.shape[1]} px input, upsampled: it can point at a region, not an outline); each group's "
        "head explains its own predicted class (multi-label: its top-scoring class). Green: right; red: wrong, "
        "with the true class in brackets.</p>"
    )
    out: dict[str, Any] = {
        "layer": layer_name,
        "family": family,
        "map_size": list(grid),
        "images": [],
        "figures": [],
    }
    for start in range(0, len(rows), GRADCAM_ROWS):
        chunk = rows[start : start + GRADCAM_ROWS]
        maps = gradcam_pixels(model, pre.mean, pre.std, ev.pixels[chunk])
        overlays = {g: np.stack([overlay(ev.pixels[i], m) for i, m in zip(chunk, maps[g], strict=True)]) for g in maps}
        captions: dict[str, list[tuple[str, bool]]] = {g: [] for g in maps}
        for i in chunk:
            record: dict[str, Any] = {"path": ev.paths[i], "groups": {}}
            for g in maps:
                v = verdict(ev, g, int(i))
                shown = v.get("top", v["predicted"])
                text = f"{short(g, 8)}: {short(shown, 12)}"
                if v["right"] is False:
                    text += f"\n(true {short(str(v['true']), 14)})"
                captions[g].append((text, v["right"] is not False))
                record["groups"][g] = v
            out["images"].append(record)
        fig = figures.gradcam_figure(ev.pixels[chunk], overlays, captions, titles[start : start + GRADCAM_ROWS])
        files = figures.save(fig, opt.figures, f"gradcam_{start // GRADCAM_ROWS + 1}", photo=True)
        out["figures"].append(files)
        body += figure(files, f"Grad-CAM images {start + 1}-{start + len(chunk)}")
    return Section("gradcam", "Where the model looks", body), out


def _map_size(model: Any, layer: Any, pixels: np.ndarray, mean: Any, std: Any) -> tuple[int, int]:
    """Height and width of the map Grad-CAM weights (the hooked layer's output, tokens laid on their grid)."""
    import torch

    from fashattr.report.gradcam import as_feature_map

    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, o: seen.append(o.detach()))
    try:
        x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float()
        m = torch.tensor(tuple(mean)).view(1, -1, 1, 1) * 255.0
        s = torch.tensor(tuple(std)).view(1, -1, 1, 1) * 255.0
        with torch.no_grad():
            model(((x - m) / s).to(next(model.parameters()).device))
    finally:
        handle.remove()
    h, w = as_feature_map(seen[-1], model.backbone).shape[-2:]
    return int(h), int(w)


def _cross_fit_probs(kind: str, logits: np.ndarray, target: np.ndarray, seed: int) -> tuple[np.ndarray, list[float]]:
    """Probabilities after temperature scaling, each half of the images scaled by the temperature
    fitted on the other half (so no image is measured with a temperature fitted on itself)."""
    known = np.flatnonzero(target >= 0 if kind == "single" else (target >= 0).any(1))
    halves = np.array_split(np.random.default_rng(seed).permutation(known), 2)
    scaled = logits.astype(np.float64).copy()
    temps = []
    for this, other in ((halves[0], halves[1]), (halves[1], halves[0])):
        t = fit_temperature(logits[other], target[other], kind) if len(other) else 1.0  # type: ignore[arg-type]
        scaled[this] = logits[this] / t
        temps.append(float(t))
    return probabilities(kind, scaled), temps


def calibration_section(ev: Evaluated, opt: Options) -> tuple[Section, dict[str, Any]]:
    """Reliability diagrams and ECE per group, before and after temperature scaling (cross-fitted), and
    as ``fashattr predict`` decodes when the run has a ``calibration.json`` (``fashattr calibrate``)."""
    if ev.labels is None:
        return Section("calibration", "Calibration", note("no labels on this split: calibration needs them.")), {}
    saved, saved_note = _saved_decoding(ev)
    curves: dict[str, dict[str, Any]] = {}
    rows = []
    for g in ev.schema.groups:
        z, t = ev.logits[g.name], ev.labels[g.name]
        before = reliability(probabilities(g.kind, z), t, g.kind)
        probs, temps = _cross_fit_probs(g.kind, z, t, opt.seed)
        after = reliability(probs, t, g.kind)
        curves[g.name] = {
            "before": before,
            "after": after,
            "temperature": float(np.sqrt(temps[0] * temps[1])),
            "temperatures": temps,
        }
        row = [g.name, num(before["ece"]), num(after["ece"]), f"{temps[0]:.3f} / {temps[1]:.3f}"]
        if saved is not None:
            offsets = np.asarray(saved["offsets"].get(g.name, 0.0))
            temperature = float(saved["temperature"][g.name])
            curves[g.name]["saved"] = reliability(probabilities(g.kind, (z + offsets) / temperature), t, g.kind)
            curves[g.name]["saved_temperature"] = temperature
            row += [num(curves[g.name]["saved"]["ece"]), f"{temperature:.3f}"]
        rows.append([*row, before["n"]])
    files = figures.save(figures.reliability_figure(curves), opt.figures, "reliability")
    body = (
        '<p class="muted">Temperature scaling divides a group\'s logits by one number T (no prediction changes). '
        "Cross-fitted on this split: the images are cut in two halves at random (seed "
        f"{opt.seed}); each half is scaled by the T fitted on the other, so ECE after is measured on images "
        "its T never saw. ECE: expected calibration error over 15 equal-width confidence bins (top-1 "
        "confidence for single-label groups; every (image, class) probability for multi-label ones).</p>"
    )
    header = ["group", "ECE before", "ECE after", "T (half A / half B)"]
    if saved is not None:
        header += [f"ECE as predict decodes ({saved['mode']})", "its T"]
    body += table([*header, "measured on"], rows)
    if saved_note:
        body += note(saved_note)
    body += figure(files, "reliability diagrams", wide=True)
    return Section("calibration", "Calibration", body), {
        "groups": curves,
        "figure": files,
        "calibration_json": saved,
        "calibration_note": saved_note,
    }


def _saved_decoding(ev: Evaluated) -> tuple[dict[str, Any] | None, str | None]:
    """The default decoding mode of the run's ``calibration.json`` (offsets and temperatures per group)
    when it applies to the reported weights, and a line that says where it was fitted."""
    from fashattr.calibration.store import CalibrationError, load_calibration

    if not (ev.info.path / "calibration.json").is_file():
        return None, None
    try:
        cal = load_calibration(ev.info.path, ev.weights, ev.pixels.shape[1])  # refused when fitted at another size
    except CalibrationError as e:
        return None, f"calibration.json not used: {e}"
    if cal is None:
        return None, f"calibration.json was fitted for other weights than {ev.weights}.safetensors: not used."
    mode = cal["default"]
    fitted = cal.get("fitted_on", {}).get("split")
    saved = {"mode": mode, "fitted_on": fitted, **{k: cal["modes"][mode][k] for k in ("offsets", "temperature")}}
    where = (
        "on these same images (in-sample: use --split test_holdout for an honest number)"
        if fitted == ev.split
        else f"on split {fitted!r}, other images than these"
    )
    return saved, (
        f"calibration.json (fashattr calibrate) is applied as `fashattr predict` applies it: decoding mode {mode!r} "
        f"(logit adjustment, then its temperature), fitted {where}. Its decoding can change predictions, so its "
        "diagram's accuracies differ from the raw model's."
    )
