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


def test_top_5_only_where_the_group_is_larger():
    schema = Schema((Group("big", tuple("abcdefg")), Group("small", ("x", "y", "z", "w"))))
    big = np.tile(np.arange(7, 0, -1, dtype=float), (2, 1))  # ranking a b c d e f g
    t = {"big": np.array([4, 5]), "small": np.array([0, 3])}  # e ranks 5th, f 6th
    m = compute_metrics(schema, t, {"big": big, "small": one_hot_scores([0, 0], 4)})
    assert m.groups["big"].topk == {3: 0.0, 5: pytest.approx(0.5)}
    assert set(m.groups["small"].topk) == {3}
    assert "big/top5" in m.summary() and "small/top5" not in m.summary()


def test_multi_label_top_k_recall_and_average_precision_by_hand():
    schema = Schema((Group("m", ("a", "b", "c", "d", "e", "f"), kind="multi"), Group("n", ("p", "q"), kind="multi")))
    #            a    b    c    d    e    f
    s = np.array(
        [
            [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # top3 a b c
            [0.1, 0.2, 0.3, 0.9, 0.8, 0.7],  # top3 d e f
            [0.6, 0.1, 0.2, 0.3, 0.4, 0.5],  # top3 a f e
        ]
    )
    t = np.array(
        [
            [1, 0, 0, 1, 0, 0],
            [1, 0, 0, 1, 0, -1],
            [0, 1, 0, 0, 0, 1],
        ]
    )
    # top-3 recall per class with positives: a 1/2 (row 0 yes, row 1 no), b 0/1, d 1/2, f 1/1
    # -> mean (0.5 + 0 + 0.5 + 1) / 4; top-5 drops only the lowest score: a misses in row 1
    # (.1 is last), b in row 2 -> a 1/2, b 0/1, d 2/2, f 1/1
    # AP a: scores known .9 .1 .6 -> ranked rows 0 (pos), 2 (neg), 1 (pos): (1/1 + 2/3) / 2
    # AP b: .8 .2 .1 -> rows 0 (neg), 1 (neg), 2 (pos): 1/3
    # AP d: .6 .9 .3 -> rows 1 (pos), 0 (pos), 2: (1 + 1) / 2 = 1
    # AP f: row 1 unknown; .4 .5 -> row 2 (pos), row 0: 1
    n_scores = np.array([[1.0, -1.0], [1.0, -1.0], [1.0, -1.0]])
    n_t = np.array([[1, 0], [0, 1], [1, 0]])
    m = compute_metrics(schema, {"m": t, "n": n_t}, {"m": s, "n": n_scores})
    g = m.groups["m"]
    assert g.topk == {3: pytest.approx((0.5 + 0 + 0.5 + 1) / 4), 5: pytest.approx((0.5 + 0 + 1 + 1) / 4)}
    assert g.ap == [pytest.approx((1 + 2 / 3) / 2), pytest.approx(1 / 3), None, 1.0, None, 1.0]
    assert g.mean_ap == pytest.approx(((1 + 2 / 3) / 2 + 1 / 3 + 1 + 1) / 4)
    # group n has 2 classes: no top-k, but an AP. Its three scores per class tie, so each
    # class has one threshold holding every image: p (rows 0 and 2 positive) 2/3, q 1/3
    assert m.groups["n"].topk == {}
    assert m.groups["n"].ap == [pytest.approx(2 / 3), pytest.approx(1 / 3)]
    # all attributes at once: 8 classes, top-3 over the row's 8 scores
    # row 0: n.p=1.0 first, then a .9, b .8 -> top3 {p, a, b}; row 1: p 1.0, d .9, e .8;
    # row 2: p 1.0, a .6, f .5
    # positives: a rows 0,1 -> 1/2; b row 2 -> 0; d rows 0,1 -> 1/2; f row 2 -> 1; p rows 0,2 -> 1; q row 1 -> 0
    assert m.attributes_topk[3] == pytest.approx((0.5 + 0 + 0.5 + 1 + 1 + 0) / 6)
    summary = m.summary()
    assert summary["m/top3_recall"] == g.topk[3] and summary["m/mAP"] == g.mean_ap
    assert "attributes/top5_recall" in summary and "attributes/mAP" in summary
    assert "top3_recall" in m.table() and "mAP" in m.table()
