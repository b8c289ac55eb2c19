"""benchmarks/active_learning.py's verdicts: the labels a mean curve needs and the paired gap at the budget
(values computed by hand)."""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np
import pytest
from conftest import load_benchmark

from fashattr.catalog import select
from fashattr.schema import Group, Schema


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


def two_view_data() -> tuple[Schema, np.ndarray, dict[str, np.ndarray]]:
    """60 photos, two views each (the mirror image a little off the plain one), two groups learnable from the
    first two features."""
    rng = np.random.default_rng(0)
    plain = rng.normal(size=(60, 8))
    x = np.stack([plain, plain + rng.normal(scale=0.3, size=plain.shape)])
    labels = {"a": (plain[:, 0] > 0).astype(np.int64), "b": (plain[:, 1] > 0).astype(np.int64) * 2}
    schema = Schema((Group("a", ("no", "yes")), Group("b", ("x", "y", "z"))))
    return schema, x, labels


@pytest.mark.parametrize("setting", [{"hidden": 16, "epochs": 3, "seed": 0}, {"c": 1.0}])
def test_two_views_average_the_views_probabilities(al: ModuleType, setting: dict):
    schema, x, labels = two_view_data()
    heads = al.fit_heads(x, labels, schema, setting)
    both = al.probabilities(heads, x, schema)
    each = [al.probabilities(heads, x[v : v + 1], schema) for v in range(2)]
    for g in schema.groups:
        assert both[g.name].shape == (60, g.num_classes)
        np.testing.assert_allclose(both[g.name], (each[0][g.name] + each[1][g.name]) / 2, atol=1e-6)
        np.testing.assert_allclose(both[g.name].sum(1), 1.0, atol=1e-6)
        assert not np.allclose(each[0][g.name], each[1][g.name])  # the views differ, so averaging is not a no-op
    if "c" in setting:  # a class no labelled photo has ("y") gets 0 from the logistic heads
        assert (both["b"][:, 1] == 0).all()


def test_dropout_samples_for_bald(al: ModuleType):
    import torch

    schema, x, labels = two_view_data()
    heads = al.fit_heads(x, labels, schema, {"hidden": 16, "epochs": 3, "seed": 0})
    before = torch.random.get_rng_state()
    draws = heads.samples(x, 5, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)  # the masks leave the next round's training alone
    assert not heads.body.training  # dropout off again for scoring
    for g in schema.groups:
        assert draws[g.name].shape == (5, 60, g.num_classes)
        np.testing.assert_allclose(draws[g.name].sum(2), 1.0, atol=1e-6)
        assert not np.allclose(draws[g.name][0], draws[g.name][1])  # each pass its own dropout masks
        np.testing.assert_array_equal(draws[g.name], heads.samples(x, 5, seed=7)[g.name])  # the seed fixes them


def test_pool_density_by_hand(al: ModuleType):
    # three unit vectors at 0, 10 and 90 degrees: the two close ones are each other's nearest neighbour
    angles = np.radians([0.0, 10.0, 90.0])
    emb = np.stack([np.cos(angles), np.sin(angles)], 1)
    c10, c80, c90 = (np.cos(np.radians(a)) for a in (10, 80, 90))
    np.testing.assert_allclose(al.pool_density(emb, k=1), [c10, c10, c80], atol=1e-12)
    two = [(c10 + c90) / 2, (c10 + c80) / 2, (c80 + c90) / 2]
    np.testing.assert_allclose(al.pool_density(emb, k=2), two, atol=1e-12)


def test_density_margin_prefers_an_unsure_photo_in_a_crowd(al: ModuleType):
    # margins: photo 0 unsure (0.1 apart), 1 unsure, 2 sure; photo 0 is an outlier (density 0.2)
    probs = {"a": np.array([[0.55, 0.45], [0.6, 0.4], [0.95, 0.05]])}
    density = np.array([0.2, 0.9, 0.9])
    # scores: 0.9 * 0.2 = 0.18, 0.8 * 0.9 = 0.72, 0.1 * 0.9 = 0.09
    np.testing.assert_array_equal(al.density_margin(probs, density, 3), [1, 0, 2])
    np.testing.assert_array_equal(al.density_margin(probs, np.ones(3), 1), [0])  # margin alone picks the outlier


def test_margin_per_group_takes_turns(al: ModuleType):
    # the gaps between the two best classes, a: 0.0 0.2 0.9 0.8 (its order 0 1 3 2); b: 0.9 0.1 0.0 0.5 (2 1 3 0).
    # Turns: a takes 0, b takes 2, a takes 1, b takes 3 (its 2 and 1 are taken)
    a = np.array([[0.5, 0.5], [0.6, 0.4], [0.95, 0.05], [0.9, 0.1]])
    b = np.array([[0.95, 0.05, 0.0], [0.5, 0.4, 0.1], [0.4, 0.4, 0.2], [0.7, 0.2, 0.1]])
    np.testing.assert_array_equal(al.margin_per_group({"a": a, "b": b}, 4), [0, 2, 1, 3])
    np.testing.assert_array_equal(al.margin_per_group({"a": a, "b": b}, 9), [0, 2, 1, 3])  # no more than there are
    np.testing.assert_array_equal(al.margin_per_group({"a": a}, 2), [0, 1])  # one group: margin itself
    # margin averages the gaps (0.45 0.15 0.45 0.65) and takes photo 1 first, where neither group is the most unsure
    np.testing.assert_array_equal(select.choose("margin", 4, {"a": a, "b": b}, np.eye(4), np.eye(4)[:0]), [1, 0, 2, 3])


def test_ensemble_margin_ranks_the_members_mean(al: ModuleType):
    # Two members, one group. Photo 0: each member sure, of opposite classes, so the mean (0.5, 0.5) is a tie;
    # photo 1: both lean the same way (mean 0.7, 0.3); photo 2: both sure (mean 0.95, 0.05).
    one = {"a": np.array([[0.9, 0.1], [0.6, 0.4], [0.95, 0.05]])}
    two = {"a": np.array([[0.1, 0.9], [0.8, 0.2], [0.95, 0.05]])}
    np.testing.assert_array_equal(al.ensemble_margin([one, two], 3), [0, 1, 2])
    # Either member alone ranks photo 1 (gap 0.2 or 0.6) against photo 0 (gap 0.8) the other way round for `one`
    np.testing.assert_array_equal(al.ensemble_margin([one], 3), [1, 0, 2])
    np.testing.assert_array_equal(al.ensemble_margin([one, two], 9), [0, 1, 2])  # no more than there are
    # Two groups: the gaps of the mean are averaged over the groups, as margin's are. Group b is sure of photos 0
    # and 2 and torn on photo 1: the averages are (0 + 1) / 2, (0.4 + 0) / 2, (0.9 + 1) / 2 = 0.5, 0.2, 0.95
    b = {"b": np.array([[1.0, 0.0], [0.5, 0.5], [1.0, 0.0]])}
    np.testing.assert_array_equal(al.ensemble_margin([one | b, two | b], 3), [1, 0, 2])


def test_dropquery_picks_distinct_unsure_photos(al: ModuleType):
    schema, x, labels = two_view_data()
    heads = al.fit_heads(x, labels, schema, {"hidden": 16, "epochs": 3, "seed": 0})
    emb = x[0] / np.linalg.norm(x[0], axis=1, keepdims=True)
    picks = al.dropquery(heads, x, emb, 5, seed=3)  # k-means among the candidates (29 here)
    assert picks.shape == (5,) and len(set(picks.tolist())) == 5 and picks.max() < 60
    np.testing.assert_array_equal(picks, al.dropquery(heads, x, emb, 5, seed=3))  # the seed fixes the masks
    # more asked for than there are candidates (the fallback) and than there are photos: every photo, once
    assert sorted(al.dropquery(heads, x, emb, 80, seed=3).tolist()) == list(range(60))


def test_two_view_inputs_are_scaled_by_the_plain_view(al: ModuleType):
    _, x, _ = two_view_data()
    data = {"pool": x * 3 + 1, "selection": x[:, :10], "test": x[:, 10:20]}
    scaled = al.standardise(data)
    assert scaled["pool"].shape == (2, 60, 8) and scaled["test"].shape == (2, 10, 8)
    np.testing.assert_allclose(scaled["pool"][0].mean(0), 0.0, atol=1e-9)
    np.testing.assert_allclose(scaled["pool"][0].std(0), 1.0, atol=1e-5)
    reduced = al.reduce(data, 3)
    assert reduced["pool"].shape == (2, 60, 3) and reduced["selection"].shape == (2, 10, 3)
    np.testing.assert_allclose(reduced["pool"][0].mean(0), 0.0, atol=1e-9)  # PCA centres on the plain view


def test_resampled_metrics_by_hand(al: ModuleType):
    # group a: truth 0 0 1 1, predicted 0 1 1 1; group b (3 classes): truth 2 2 0 -1, predicted 2 0 0 1.
    truth = np.array([[0, 2], [0, 2], [1, 0], [1, -1]])
    predicted = np.array([[0, 2], [1, 0], [1, 0], [1, 1]])
    ones = np.ones((1, 4))
    m = al.resampled_metrics(ones, predicted, truth, [2, 3])
    # a: accuracy 3/4, recalls 1/2 and 1; b: accuracy 2/3 of the three known, recalls 1 (class 0) and 1/2 (class 2),
    # class 1 absent and left out.
    assert m["overall_acc"][0] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert m["avg_class_acc"][0] == pytest.approx((0.5 + 1 + 1 + 0.5) / 4)
    # Photo 0 drawn twice, photo 1 not at all: every counted prediction is right.
    drawn = al.resampled_metrics(np.array([[2.0, 0, 1, 1]]), predicted, truth, [2, 3])
    assert drawn["overall_acc"][0] == pytest.approx(1.0) and drawn["avg_class_acc"][0] == pytest.approx(1.0)


def test_resampled_metrics_agree_with_fashattr_metrics(al: ModuleType):
    from fashattr.metrics import compute_metrics

    rng = np.random.default_rng(3)
    schema = Schema((Group("a", ("p", "q", "r")), Group("b", ("s", "t"))))
    truth = np.stack([rng.integers(3, size=200), rng.integers(-1, 2, size=200)], 1)
    probs = {"a": rng.dirichlet(np.ones(3), 200), "b": rng.dirichlet(np.ones(2), 200)}
    predicted = np.stack([probs["a"].argmax(1), probs["b"].argmax(1)], 1)
    ours = al.resampled_metrics(np.ones((1, 200)), predicted, truth, [3, 2])
    theirs = compute_metrics(schema, {"a": truth[:, 0], "b": truth[:, 1]}, probs)
    assert ours["overall_acc"][0] == pytest.approx(theirs.overall_acc)
    assert ours["avg_class_acc"][0] == pytest.approx(theirs.avg_class_acc)


def test_photo_bootstrap_interval(al: ModuleType):
    schema = Schema((Group("a", ("p", "q")),))
    truth = {"a": np.array([0, 1, 0, 1, 1, 0])}
    right = truth["a"][:, None].astype(np.int8)
    wrong = 1 - right
    # Every seed: the strategy right on every photo at 300 labels, random wrong on every photo at 400.
    ours = [{300: right, 400: right}] * 3
    random = [{300: wrong, 400: wrong}] * 3
    gap = al.photo_bootstrap(ours, random, 300, 400, truth, schema, draws=200)
    assert gap["overall_acc"] == {"low": 1.0, "high": 1.0}  # whatever photos are drawn, the gap is 1
    same = al.photo_bootstrap(ours, ours, 300, 400, truth, schema, draws=200)
    assert same["avg_class_acc"] == {"low": 0.0, "high": 0.0}
    # Half right: photos 0-2 right, 3-5 wrong, against random wrong everywhere: the gap moves with the draw.
    half = np.where(np.arange(6)[:, None] < 3, right, wrong).astype(np.int8)
    spread = al.photo_bootstrap([{300: half}], [{400: wrong}], 300, 400, truth, schema, draws=500)
    assert 0.0 <= spread["overall_acc"]["low"] < 0.5 < spread["overall_acc"]["high"] <= 1.0


def test_folds_partition_every_photo_once(al: ModuleType):
    split = al.folds(23, 5)
    assert sorted(np.concatenate(split).tolist()) == list(range(23))  # every photo in exactly one fold
    assert sorted(len(f) for f in split) == [4, 4, 5, 5, 5]
    assert all((a == b).all() for a, b in zip(split, al.folds(23, 5), strict=True))  # the same split every run


def test_cv_split_holds_one_fold_out(al: ModuleType):
    # Feature 0 of a photo is its index over pool then selection; its label is the index too.
    pool = np.arange(7, dtype=np.float32)[None, :, None].repeat(2, 0)
    selection = np.arange(7, 10, dtype=np.float32)[None, :, None].repeat(2, 0)
    data = {
        "pool": pool,
        "pool_labels": {"a": np.arange(7)},
        "selection": selection,
        "selection_labels": {"a": np.arange(7, 10)},
        "test": np.zeros((2, 1, 1)),
        "second": "selection",
    }
    fold = np.array([8, 2, 5])
    cv = al.cv_split(data, fold)
    assert cv["second"] == "cv"
    assert cv["selection"][0, :, 0].tolist() == [8, 2, 5] and cv["selection_labels"]["a"].tolist() == [8, 2, 5]
    assert cv["pool"][1, :, 0].tolist() == [0, 1, 3, 4, 6, 7, 9] == cv["pool_labels"]["a"].tolist()
    assert cv["test"] is data["test"]


def test_photo_bootstrap_scores_each_seed_on_its_own_fold(al: ModuleType):
    schema = Schema((Group("a", ("p", "q")),))
    truth = {"a": np.array([0, 1, 0, 1, 1, 0, 0, 1])}
    y = truth["a"][:, None].astype(np.int8)
    rows = [np.array([0, 1, 2, 3]), np.array([7, 6, 5, 4])]
    # Seed 0 right on its fold, seed 1 too; random wrong on every photo of both: the gap is 1 in every draw that
    # holds a photo of each fold, whatever order a fold's predictions come in.
    ours = [{300: y[r]} for r in rows]
    random = [{400: 1 - y[r]} for r in rows]
    gap = al.photo_bootstrap(ours, random, 300, 400, truth, schema, draws=300, rows=rows)
    assert gap["overall_acc"] == {"low": 1.0, "high": 1.0}
    assert gap["avg_class_acc"] == {"low": 1.0, "high": 1.0}
    # Seed 1's predictions read against seed 0's fold would be wrong half the time: the rows are what aligns them.
    swapped = al.photo_bootstrap(ours, random, 300, 400, truth, schema, draws=300, rows=rows[::-1])
    assert swapped["overall_acc"]["low"] < 1.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--evaluate", "cv", "--head", "mlp", "--views", "flip"], "fix the MLP's width and epochs"),
        (["--evaluate", "cv", "--head", "mlp", "--mlp", "512x60", "--views", "auto"], "fix --views auto"),
        (["--evaluate", "cv"], "fix --c auto / --pca auto"),
        (["--evaluate", "cv", "--c", "0.5", "--seeds", "0,1,2", "--folds", "2"], "3 seeds over 2 folds"),
        (["--mlp", "512x60"], "pass --head mlp"),
        (["--head", "mlp", "--mlp", "wide"], "expected WIDTHxEPOCHS"),
        (["--folds", "5"], "--folds 5 splits the photos for --evaluate cv only"),
        (["--strategies", "random,bald"], "bald needs the MLP heads"),
        (["--strategies", "random,dropquery"], "dropquery needs the MLP heads"),
        (["--strategies", "random,ensemble-margin"], r"ensemble-margin needs the MLP heads \(.*random starts\)"),
        (["--strategies", "random,marginal"], r"unknown \['marginal'\]"),
    ],
)
def test_arguments_that_cannot_make_a_fair_curve(al: ModuleType, argv: list[str], message: str):
    with pytest.raises(SystemExit, match=message):  # before any feature is read
        al.main([*argv, "--results", "/nonexistent/never_written"])
