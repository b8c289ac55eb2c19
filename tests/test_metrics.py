"""Metrics on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from fashattr.metrics import compute_metrics
from fashattr.schema import Group, Schema

SCHEMA = Schema((Group("a", ("x", "y", "z")), Group("b", ("p", "q"))))


def one_hot_scores(pred: list[int], c: int) -> np.ndarray:
    s = np.zeros((len(pred), c))
    s[np.arange(len(pred)), pred] = 1.0
    return s


def test_hand_computed_case():
    # group a: true x x x y y z ; pred x y x y z z
    #   recall x 2/3, y 1/2, z 1/1; acc 4/6; precision x 2/2, y 1/2, z 1/2
    # group b: true p p q q q q ; pred p q q q q p
    #   recall p 1/2, q 3/4; acc 4/6
    ta, pa = np.array([0, 0, 0, 1, 1, 2]), [0, 1, 0, 1, 2, 2]
    tb, pb = np.array([0, 0, 1, 1, 1, 1]), [0, 1, 1, 1, 1, 0]
    m = compute_metrics(SCHEMA, {"a": ta, "b": tb}, {"a": one_hot_scores(pa, 3), "b": one_hot_scores(pb, 2)})
    a, b = m.groups["a"], m.groups["b"]
    assert a.recall == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert a.precision == pytest.approx([1.0, 1 / 2, 1 / 2])
    assert a.support == [3, 2, 1] and a.predicted == [2, 2, 2]
    assert a.accuracy == pytest.approx(4 / 6)
    assert b.recall == pytest.approx([1 / 2, 3 / 4])
    # average per-class accuracy: mean of the 5 class recalls
    assert m.avg_class_acc == pytest.approx((2 / 3 + 1 / 2 + 1 + 1 / 2 + 3 / 4) / 5)
    # overall accuracy: mean of the 2 group accuracies
    assert m.overall_acc == pytest.approx((4 / 6 + 4 / 6) / 2)
    # exact match: rows 0, 2, 3 have both groups right
    assert m.exact_match == pytest.approx(3 / 6)
    assert a.confusion is not None
    assert a.confusion.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_absent_class_is_reported_not_zero():
    ta = np.array([0, 0, 1, 1])  # class z never occurs
    tb = np.array([0, 1, 0, 1])
    m = compute_metrics(
        SCHEMA, {"a": ta, "b": tb}, {"a": one_hot_scores([0, 0, 1, 2], 3), "b": one_hot_scores([0, 1, 0, 1], 2)}
    )
    a = m.groups["a"]
    assert a.recall[2] is None
    assert a.absent == ["z"]
    assert a.avg_class_acc == pytest.approx((1.0 + 0.5) / 2)  # z left out, not counted as 0
    assert m.avg_class_acc == pytest.approx((1.0 + 0.5 + 1.0 + 1.0) / 4)
    assert "absent" in m.table()
    assert not any(np.isnan(v) for v in m.summary().values())


def test_unknown_labels_are_ignored():
    ta = np.array([0, -1, 2])
    tb = np.array([-1, -1, 1])
    m = compute_metrics(
        SCHEMA, {"a": ta, "b": tb}, {"a": one_hot_scores([0, 1, 1], 3), "b": one_hot_scores([0, 0, 1], 2)}
    )
    assert m.groups["a"].n == 2 and m.groups["a"].accuracy == pytest.approx(0.5)
    assert m.groups["b"].n == 1 and m.groups["b"].accuracy == 1.0
    # row 0: a right, b unknown -> exact; row 1: nothing known -> not counted; row 2: a wrong
    assert m.exact_match == pytest.approx(0.5)


def test_top_k():
    schema = Schema((Group("g", ("a", "b", "c", "d")),))
    scores = np.array([[0.4, 0.3, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]])
    t = np.array([1, 3, 0])  # top-1 misses all; top-3 catches row 0 only (row 2: a ranks 4th)
    m = compute_metrics(schema, {"g": t}, {"g": scores})
    assert m.groups["g"].accuracy == 0.0
    assert m.groups["g"].topk == {3: pytest.approx(1 / 3)}


def test_multi_label_group():
    schema = Schema((Group("m", ("u", "v", "w"), kind="multi"),))
    t = np.array([[1, 0, 0], [1, 1, -1]])
    logits = np.array([[2.0, -2.0, 3.0], [-1.0, 1.0, 5.0]])  # pred [1,0,1], [0,1,1]
    m = compute_metrics(schema, {"m": t}, {"m": logits})
    g = m.groups["m"]
    assert g.recall == [pytest.approx(0.5), pytest.approx(1.0), None]  # w has no positive
    assert g.accuracy == pytest.approx(3 / 5)  # 5 known entries, 3 right
    assert m.exact_match == 0.0
