"""benchmarks/active_learning.py's verdicts: the labels a mean curve needs and the paired gap at the budget
(values computed by hand)."""

from __future__ import annotations

import math
from types import ModuleType

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def al() -> ModuleType:
    return load_benchmark("active_learning")


def curve(*points: tuple[int, float]) -> list[dict[str, float]]:
    return [{"labels": n, "overall_acc": v} for n, v in points]


def test_labels_to_reach(al: ModuleType):
    c = curve((200, 0.70), (300, 0.74), (400, 0.76))
    assert al.labels_to_reach(c, "overall_acc", 0.74) == 300
    assert al.labels_to_reach(c, "overall_acc", 0.761) is None


def test_paired_gap_by_hand(al: ModuleType):
    # Three seeds: the strategy at 300 labels against random at 400, seed by seed: +0.01, -0.01, +0.03.
    strategy = [curve((300, 0.75), (400, 0.0)), curve((300, 0.74), (400, 0.0)), curve((300, 0.78), (400, 0.0))]
    random = [curve((300, 0.0), (400, 0.74)), curve((300, 0.0), (400, 0.75)), curve((300, 0.0), (400, 0.75))]
    gap = al.paired_gap(strategy, random, 300, 400, "overall_acc")
    mean, sd = 0.01, 0.02  # gaps 0.01, -0.01, 0.03: mean 0.01, sample sd sqrt((0 + 0.0004 + 0.0004) / 2) = 0.02
    half = 4.302652729911275 * sd / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
    assert gap["mean"] == pytest.approx(mean)
    assert gap["low"] == pytest.approx(mean - half) and gap["high"] == pytest.approx(mean + half)
    assert gap["seeds"] == 3
    one = al.paired_gap(strategy[:1], random[:1], 300, 400, "overall_acc")
    assert one["mean"] == pytest.approx(0.01) and math.isnan(one["low"])  # one seed: no interval
