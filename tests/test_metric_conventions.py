"""Metric conventions: the two top-k recall conventions, ties, and the one multi-label threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score

from fashattr.config import DataConfig, ModelConfig
from fashattr.metrics import (
    average_precision,
    compute_metrics,
    metric_names,
    multi_label_positive,
    top_k_recall,
    topk_credit,
)
from fashattr.models import create_model
from fashattr.predictor import Predictor
from fashattr.schema import Group, Schema


def fifty_two_classes() -> tuple[np.ndarray, np.ndarray]:
    """52 classes, 53 images, whose top-3 per-class recalls are 48 ones, one 1/2 and three 0s."""
    c = 52
    t, s = np.zeros((53, c), dtype=np.int64), np.zeros((53, c))
    for i in range(c):
        t[i, i] = 1
        if i < 49:
            s[i, i] = 1.0  # its own class alone on top: a hit
        else:
            s[i] = 1.0
            s[i, i] = 0.0  # 51 classes strictly higher: a miss
    t[52, [0, 1]] = 1
    s[52, 0], s[52, 1] = 2.0, -1.0  # class 0 a hit, class 1 a miss
    return t, s


def test_top_k_recall_both_conventions_by_hand():
    t, s = fifty_two_classes()
    # per class: 0 -> 2/2, 1 -> 1/2 (image 1 hit, image 52 miss), 2..48 -> 1, 49..51 -> 0
    assert top_k_recall(t, s, 3) == pytest.approx(48.5 / 52)  # every class with positives
    assert top_k_recall(t, s, 3, best=50) == pytest.approx(48.5 / 50)  # the 50 best: 48 ones, 1/2, 0

    # through compute_metrics, with a second multi-label group for the "all attributes" column:
    # its scores (-5) never reach a top 3 of all 56 classes, and within it all four tie, so its
    # one class with positives (a, rows 0-2) gets 3/4 of a hit per image
    schema = Schema(
        (Group("big", tuple(f"c{i}" for i in range(52)), kind="multi"), Group("small", tuple("abcd"), kind="multi"))
    )
    small_t = np.zeros((53, 4), dtype=np.int64)
    small_t[:3, 0] = 1
    m = compute_metrics(schema, {"big": t, "small": small_t}, {"big": s, "small": np.full((53, 4), -5.0)})
    summary = m.summary()
    assert summary["big/top3_recall"] == pytest.approx(48.5 / 52)
    assert summary["big/top3_recall_top50"] == pytest.approx(48.5 / 50)
    # with at most 50 classes with positives both conventions are one number
    assert summary["small/top3_recall"] == summary["small/top3_recall_top50"] == pytest.approx(3 / 4)
    # all 56 attributes: 53 classes with positives (small's a now misses everywhere)
    assert summary["attributes/top3_recall"] == pytest.approx(48.5 / 53)
    assert summary["attributes/top3_recall_top50"] == pytest.approx(48.5 / 50)
    assert {"big/top5_recall_top50", "attributes/top5_recall_top50"} <= set(summary)
    assert set(summary) <= set(metric_names(schema))
    assert "top3_recall_top50 0.9700" in m.table()
    assert m.to_dict()["groups"]["big"]["topk_top50"]["3"] == pytest.approx(0.97)


def test_tied_top_k_scores_share_the_places_left():
    # k = 3: one class above the tie, three tied for the two places left, one below
    credit = topk_credit(np.array([[3.0, 2.0, 2.0, 2.0, 1.0]]), 3)
    assert credit.tolist() == [[1.0, pytest.approx(2 / 3), pytest.approx(2 / 3), pytest.approx(2 / 3), 0.0]]
    # constant scores carry no ranking: every class gets k / C, wherever its column is
    t = np.zeros((2, 6), dtype=np.int64)
    t[:, 3:] = 1  # positives only in the last three columns
    flat = np.zeros((2, 6))
    assert top_k_recall(t, flat, 3) == pytest.approx(0.5)
    assert top_k_recall(t[:, ::-1], flat, 3) == pytest.approx(0.5)
    # single-label top-k: the true class tied with all four others
    schema = Schema((Group("g", tuple("abcd")),))
    m = compute_metrics(schema, {"g": np.array([3])}, {"g": np.zeros((1, 4))})
    assert m.groups["g"].topk == {3: pytest.approx(3 / 4)}


def test_top_k_and_average_precision_do_not_depend_on_row_or_class_order():
    rng = np.random.default_rng(0)
    t = rng.choice([-1, 0, 1], size=(40, 7), p=[0.1, 0.6, 0.3])
    s = rng.integers(0, 3, size=(40, 7)).astype(float)  # three values: ties everywhere
    rows, cols = rng.permutation(40), rng.permutation(7)
    for k in (3, 5):
        assert top_k_recall(t[rows][:, cols], s[rows][:, cols], k) == pytest.approx(top_k_recall(t, s, k))
    shuffled = average_precision(t[rows][:, cols], s[rows][:, cols])
    assert shuffled == [pytest.approx(a) if a is not None else None for a in np.array(average_precision(t, s))[cols]]
    # by hand: one positive and one negative at one score are one threshold, in either order
    assert average_precision(np.array([[1], [0]]), np.array([[0.5], [0.5]])) == [0.5]
    assert average_precision(np.array([[0], [1]]), np.array([[0.5], [0.5]])) == [0.5]


def test_average_precision_matches_scikit_learn_with_many_ties():
    rng = np.random.default_rng(1)
    t = rng.choice([-1, 0, 1], size=(300, 12), p=[0.1, 0.7, 0.2])
    s = rng.integers(0, 5, size=(300, 12)) / 4  # five distinct scores
    ours = average_precision(t, s)
    for c in range(12):
        known = t[:, c] >= 0
        assert ours[c] == pytest.approx(average_precision_score(t[known, c] == 1, s[known, c]), abs=1e-12)


def test_one_multi_label_threshold_logit_above_zero():
    # logits 0 and -1e-30 are absent, 1e-30 and 2 present; in float64 the sigmoid of all three
    # small ones is exactly 0.5, which a probability threshold could not tell apart
    logits = np.array([[0.0, 1e-30, -1e-30, 2.0]])
    assert multi_label_positive(logits).tolist() == [[False, True, False, True]]
    schema = Schema((Group("m", tuple("abcd"), kind="multi"),))
    m = compute_metrics(schema, {"m": np.array([[0, 1, 0, 1]])}, {"m": logits})
    assert m.groups["m"].predicted == [0, 1, 0, 1]
    assert m.groups["m"].accuracy == 1.0 and m.exact_match == 1.0  # group accuracy and exact match agree


def test_predictor_uses_the_same_threshold(tmp_path: Path):
    schema = Schema((Group("m", tuple("abcd"), kind="multi"),))
    model = create_model(ModelConfig(backbone="test_resnet"), schema, 32)
    with torch.no_grad():  # the head ignores the image: its logits are its bias
        model.heads["m"].weight.zero_()
        model.heads["m"].bias.copy_(torch.tensor([0.0, 1e-30, -1e-30, 2.0]))
    path = tmp_path / "shirt.png"
    Image.new("RGB", (40, 48), (200, 30, 30)).save(path)
    predictor = Predictor(model, schema, DataConfig(image_size=32), torch.device("cpu"))
    out = predictor.predict_files([path])[0]["groups"]["m"]
    assert [(x["class"], x["index"]) for x in out] == [("b", 1), ("d", 3)]


def test_bad_scores_are_named():
    schema = Schema((Group("m", tuple("abc"), kind="multi"),))
    s = np.zeros((3, 3))
    s[2, 1] = np.nan
    with pytest.raises(FloatingPointError, match=r"group 'm': score nan at row 2, class 'b' \(1 non-finite"):
        compute_metrics(schema, {"m": np.zeros((3, 3), dtype=np.int64)}, {"m": s})
    with pytest.raises(ValueError, match=r"group 'm': targets \(3, 3\) and scores \(3, 2\) do not match 3 images"):
        compute_metrics(schema, {"m": np.zeros((3, 3), dtype=np.int64)}, {"m": np.zeros((3, 2))})
