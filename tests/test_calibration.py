"""Calibration primitives on hand-computed cases: NLL, the fitted temperature, reliability bins and ECE."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fashattr.calibration.temperature import fit_temperature, nll, reliability, sigmoid, softmax


def test_nll_by_hand_single_and_multi_with_unknown_rows_ignored() -> None:
    z = np.array([[2.0, 0.0], [0.0, 0.0], [5.0, 1.0]])
    t = np.array([0, 1, -1])
    # row 0: -log(e^2 / (e^2 + 1)); row 1: log 2; row 2 unknown
    expected = (math.log(1 + math.exp(-2)) + math.log(2)) / 2
    assert nll(z, t, "single") == pytest.approx(expected)
    assert nll(z, t, "single", temperature=2.0) == pytest.approx((math.log(1 + math.exp(-1)) + math.log(2)) / 2)
    tm = np.array([[1, 0], [-1, 1], [0, -1]])
    cells = [math.log(1 + math.exp(-2)), math.log(2), math.log(2), math.log(1 + math.exp(5))]
    assert nll(z, tm, "multi") == pytest.approx(sum(cells) / 4)


def test_fitted_temperature_recovers_the_one_that_made_the_labels() -> None:
    # Labels drawn from softmax(z / 3): the NLL-optimal temperature on many rows is close to 3.
    rng = np.random.default_rng(0)
    z = rng.normal(0, 4, size=(20000, 5))
    p = softmax(z / 3.0)
    t = (p.cumsum(1) > rng.random((len(z), 1))).argmax(1)
    assert fit_temperature(z, t, "single") == pytest.approx(3.0, rel=0.05)
    # Multi-label: each cell a Bernoulli of sigmoid(z / 0.5).
    tm = (rng.random(z.shape) < sigmoid(z / 0.5)).astype(int)
    assert fit_temperature(z, tm, "multi") == pytest.approx(0.5, rel=0.05)
    # The optimum is a minimum of the NLL.
    best = fit_temperature(z, t, "single")
    assert nll(z, t, "single", best) <= min(nll(z, t, "single", best * f) for f in (0.9, 1.1))


def test_no_known_target_leaves_temperature_at_one_and_bad_shapes_are_named() -> None:
    assert fit_temperature(np.zeros((3, 2)), np.array([-1, -1, -1]), "single") == 1.0
    with pytest.raises(ValueError, match="3 rows of logits but 2 targets"):
        fit_temperature(np.zeros((3, 2)), np.array([0, 1]), "single")
    with pytest.raises(ValueError, match="unknown group kind 'soft'"):
        fit_temperature(np.zeros((3, 2)), np.array([0, 1, 1]), "soft")  # type: ignore[arg-type]


def test_reliability_bins_and_ece_by_hand() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55], [0.5, 0.5]])
    target = np.array([0, 1, 1, 0, -1])
    r = reliability(probs, target, "single", bins=4)
    # confidences 0.9 (right), 0.8 (wrong), 0.7 (right), 0.55 (wrong); bins (0.5,0.75] and (0.75,1]
    assert r["count"] == [0, 0, 2, 2] and r["n"] == 4
    assert r["confidence"][2:] == pytest.approx([0.625, 0.85]) and r["accuracy"][2:] == [0.5, 0.5]
    assert r["confidence"][0] is None and r["accuracy"][0] is None
    assert r["ece"] == pytest.approx((2 * 0.125 + 2 * 0.35) / 4)
    rm = reliability(np.array([[0.1, 0.9]]), np.array([[0, 1]]), "multi", bins=2)
    assert rm["count"] == [1, 1] and rm["ece"] == pytest.approx((0.1 + 0.1) / 2)
