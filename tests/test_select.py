"""`fashattr select`: uncertainty and diversity computed by hand, and the command on a catalog that `fashattr tag`
filled from real image files with a real tiny bundle."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import tiny_overrides
from sqlalchemy.engine import Engine

from fashattr.catalog.db import predictions
from fashattr.catalog.search import SearchError, open_catalog, resolve_model
from fashattr.catalog.select import (
    SAMPLED_STRATEGIES,
    STRATEGIES,
    badge,
    balanced_boundary,
    bald_information,
    catalog_probabilities,
    choose,
    choose_sampled,
    class_boundary_distance,
    entropy_uncertainty,
    kcenter_greedy,
    margin_uncertainty,
    power_sample,
    residuals,
    select,
)
from fashattr.cli import main
from fashattr.cli.catalog import SELECT_STRATEGIES
from fashattr.config import load_config
from fashattr.deploy.bundle import write_bundle
from fashattr.deploy.runtime import Runtime
from fashattr.engine.trainer import fit
from fashattr.portable.bundle import file_sha256


def unit(degrees: float) -> np.ndarray:
    r = math.radians(degrees)
    return np.array([math.cos(r), math.sin(r)], dtype=np.float32)


def test_uncertainty_by_hand():
    probs = {"sleeve": np.array([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]]), "fit": np.array([[1.0, 0.0], [0.5, 0.5]])}
    # margins: sleeve 0.5 and 0.0, fit 1.0 and 0.0 -> 1 - margin, averaged over the groups
    assert margin_uncertainty(probs) == pytest.approx([(0.5 + 0.0) / 2, (1.0 + 1.0) / 2])
    h = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(3)
    h2 = -(2 * 0.4 * math.log(0.4) + 0.2 * math.log(0.2)) / math.log(3)
    assert entropy_uncertainty(probs) == pytest.approx([(h + 0.0) / 2, (h2 + 1.0) / 2], abs=1e-9)


def test_kcenter_greedy_covers_what_is_not_labelled_yet():
    points = np.stack([unit(a) for a in (0, 10, 90, 180, 170)])
    # 0 degrees is labelled: the farthest point (180) first, then the one farthest from both (90), then 10 or 170.
    picks = kcenter_greedy(points, 3, labelled=unit(0)[None])
    assert list(picks[:2]) == [3, 2] and picks[2] in (1, 4)
    assert sorted(kcenter_greedy(points, 5, seed=1)) == [0, 1, 2, 3, 4]  # every point once


def test_choose_margin_kcenter_picks_diverse_points_among_the_uncertain():
    probs = {"g": np.array([[0.5, 0.5], [0.51, 0.49], [0.52, 0.48], [0.6, 0.4], [0.98, 0.02], [0.97, 0.03]])}
    emb = np.stack([unit(0), unit(1), unit(90), unit(180), unit(45), unit(135)])
    assert list(choose("margin", 3, probs)) == [0, 1, 2]
    # among the 4 * 1 most uncertain (rows 0-3), farthest from the labelled 0-degree photo: row 3 (180 degrees)
    assert list(choose("margin+kcenter", 1, probs, emb, labelled=unit(0)[None])) == [3]
    picks = choose("random", 6, probs, seed=5)
    assert sorted(picks) == list(range(6)) and list(picks) == list(choose("random", 6, probs, seed=5))
    with pytest.raises(ValueError, match=r"unknown strategy 'uncertain'; choose from \['margin'"):
        choose("uncertain", 1, probs)
    with pytest.raises(ValueError, match="strategy 'kcenter' needs the model's embeddings"):
        choose("kcenter", 1, probs)
    assert list(STRATEGIES) == SELECT_STRATEGIES


def test_badge_by_hand():
    # Two groups; residuals p - onehot(argmax): row 0 confident (0.99) has a tiny gradient, rows 1-3 unsure.
    probs = {
        "a": np.array([[0.99, 0.01], [0.5, 0.5], [0.6, 0.4], [0.6, 0.4]]),
        "b": np.array([[0.99, 0.01], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]),
    }
    emb = np.stack([unit(0), unit(0), unit(90), unit(91)])
    r = residuals(probs)
    assert r[1] == pytest.approx([-0.5, 0.5, -0.5, 0.5]) and r[2] == pytest.approx([-0.4, 0.4, -0.5, 0.5])
    # |g|^2 = |x|^2 |r|^2: 1.0 for row 1, 0.82 for rows 2 and 3, 0.0004 for row 0: row 1 first.
    picks = badge(probs, emb, 2, seed=0)
    assert picks[0] == 1
    # Then drawn in proportion to the squared distance from row 1: row 0 lies 0.96 away, rows 2 and 3 (at right
    # angles: <x1, x2> = 0) 1.0 + 0.82 = 1.82 each; every seed picks one of rows 0, 2, 3 and never row 1 again.
    seconds = [int(badge(probs, emb, 2, seed=s)[1]) for s in range(200)]
    assert set(seconds) <= {0, 2, 3} and seconds.count(2) + seconds.count(3) > seconds.count(0)
    assert sorted(badge(probs, emb, 4, seed=3)) == [0, 1, 2, 3]  # every photo once
    assert list(choose("badge", 2, probs, emb, seed=7)) == list(badge(probs, emb, 2, seed=7))
    with pytest.raises(ValueError, match="strategy 'badge' needs the model's embeddings"):
        choose("badge", 1, probs)


def test_balanced_gives_a_rare_class_its_turn():
    # Rows 0-2 sit on the border of the two common classes; row 3 is the one near class 2's border.
    p = np.array([[0.50, 0.49, 0.01], [0.51, 0.48, 0.01], [0.52, 0.47, 0.01], [0.60, 0.10, 0.30], [0.90, 0.05, 0.05]])
    # |p_c - max of the others|: class 0 -> .01 .03 .05 .30 .85; class 2 -> .49 .50 .51 .30 .85
    assert class_boundary_distance(p, 0) == pytest.approx([0.01, 0.03, 0.05, 0.30, 0.85])
    assert class_boundary_distance(p, 1) == pytest.approx([0.01, 0.03, 0.05, 0.50, 0.85])
    assert class_boundary_distance(p, 2) == pytest.approx([0.49, 0.50, 0.51, 0.30, 0.85])
    probs = {"g": p, "one": np.ones((5, 1))}  # a one-class group has no boundary and no turn
    assert list(choose("margin", 3, probs)) == [0, 1, 2]
    # Whatever the turn order: class 0 takes row 0, class 1 row 1 (row 0 is taken), class 2 row 3.
    for seed in range(6):
        assert sorted(choose("balanced", 3, probs, seed=seed)) == [0, 1, 3]
    assert list(choose("balanced", 3, probs, seed=2)) == list(balanced_boundary(probs, 3, seed=2))
    assert sorted(balanced_boundary(probs, 9, seed=1)) == [0, 1, 2, 3, 4]  # n above the pool: every photo once
    assert sorted(balanced_boundary({"one": np.ones((4, 1))}, 4, seed=0)) == [0, 1, 2, 3]  # no boundary: random


def entropy(p: list[float]) -> float:
    return -sum(x * math.log(x) for x in p if x > 0)


def test_bald_scores_what_the_passes_disagree_on_not_what_all_find_ambiguous():
    # Two dropout passes. Photo 0: each pass sure, of a different class. Photo 1: both passes split evenly (margin's
    # favourite). Photo 2: both lean to class 0, unequally.
    a = np.array([[[1.0, 0.0], [0.5, 0.5], [0.9, 0.1]], [[0.0, 1.0], [0.5, 0.5], [0.7, 0.3]]])
    b = np.array([[[0.2, 0.3, 0.5]] * 3, [[0.2, 0.3, 0.5]] * 3])  # group b: the passes agree on every photo
    info = bald_information({"a": a, "b": b})
    by_hand = [math.log(2), 0.0, entropy([0.8, 0.2]) - (entropy([0.9, 0.1]) + entropy([0.7, 0.3])) / 2]
    assert info == pytest.approx(by_hand, abs=1e-9)
    assert list(choose_sampled("bald", 3, {"a": a, "b": b})) == [0, 2, 1]
    margin = margin_uncertainty({"a": a.mean(0), "b": b.mean(0)})  # what the averaged prediction shows
    assert margin[0] == margin[1] > margin[2]  # margin cannot tell photo 0 from the one every pass finds ambiguous
    assert SAMPLED_STRATEGIES == ("bald", "powerbald") and not set(SAMPLED_STRATEGIES) & set(STRATEGIES)
    with pytest.raises(ValueError, match=r"unknown sampled strategy 'margin'; choose from \['bald', 'powerbald'\]"):
        choose_sampled("margin", 1, {"a": a})


def test_power_sample_draws_in_proportion_to_the_scores():
    for seed in range(20):  # the one positive score always comes first; the zeros follow in a random order
        picks = power_sample(np.array([0.0, 0.0, 5.0, 0.0]), 4, seed)
        assert picks[0] == 2 and sorted(picks) == [0, 1, 2, 3]
    firsts = np.array([power_sample(np.array([1.0, 3.0]), 1, seed)[0] for seed in range(4000)])
    assert abs(firsts.mean() - 0.75) < 0.025  # P(first = 1) = 3 / (1 + 3); the binomial sd is 0.007
    scores = np.array([1.0, 3.0, 2.0])
    assert list(power_sample(scores, 2, seed=3)) == list(power_sample(scores, 2, seed=3))  # the seed fixes the draw
    assert len(power_sample(scores, 10, seed=0)) == 3  # n above the pool: every photo once
    with pytest.raises(ValueError, match="scores >= 0"):
        power_sample(np.array([1.0, -0.1]), 1)
    samples = {"a": np.array([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]])}  # BALD: log 2 and 0
    for seed in range(5):
        assert list(choose_sampled("powerbald", 2, samples, seed)) == [0, 1]


@pytest.fixture(scope="module")
def tagged(tiny_data: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("select")
    run = fit(load_config(None, tiny_overrides(tiny_data, cache_dir, out, name="sel", **{"train.epochs": 1})))
    bundle = write_bundle(run, out / "bundle")
    photos = out / "photos"
    photos.mkdir()
    for f in sorted((tiny_data / "img").glob("*.jpg"))[:30]:
        shutil.copyfile(f, photos / f.name)
    url = f"sqlite:///{out / 'catalog.db'}"
    assert main(["tag", str(bundle), str(photos), "--db", url, "--backend", "torch", "--no-progress"]) == 0
    return {"bundle": bundle, "photos": photos, "url": url, "out": out}


def test_select_ranks_the_catalog_and_writes_label_studio_tasks(tagged: dict, tmp_path: Path):
    photos, url = Path(tagged["photos"]), str(tagged["url"])
    labelled = tmp_path / "labelled.txt"
    done = sorted(photos.glob("*.jpg"))[:5]
    labelled.write_text("".join(f"{p}\n" for p in done))
    out, tasks = tmp_path / "pick.csv", tmp_path / "tasks.json"
    args = ["select", "--db", url, "--strategy", "margin", "-n", "8", "--out", str(out), "--tasks", str(tasks)]
    assert main([*args, "--labelled", str(labelled)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [int(r["rank"]) for r in rows] == list(range(1, 9))
    assert not {r["path"] for r in rows} & {str(p) for p in done}  # labelled photos are never picked
    # The margins, recomputed from the bundle on the files themselves (the decoding every command applies).
    runtime = Runtime.from_bundle(Path(tagged["bundle"]))
    files = sorted(photos.glob("*.jpg"))
    decoded = runtime.decode(runtime.logits(np.stack([runtime.preprocess(f) for f in files])), top_k=2)
    records = {str(f): r for f, r in zip(files, decoded, strict=True)}
    for row in rows:
        groups = records[row["path"]]["groups"]
        want = np.mean([1 - (g["top"][0]["prob"] - g["top"][1]["prob"]) for g in groups.values()])
        assert float(row["margin_uncertainty"]) == pytest.approx(want, abs=1e-5)
        assert row["sha256"] == file_sha256(Path(row["path"]))
    unpicked = [p for p in records if p not in {r["path"] for r in rows} and Path(p) not in done]
    worst_picked = min(float(r["margin_uncertainty"]) for r in rows)
    assert all(
        np.mean([1 - (g["top"][0]["prob"] - g["top"][1]["prob"]) for g in records[p]["groups"].values()])
        <= worst_picked + 1e-5
        for p in unpicked
    )
    # Label Studio tasks of the picks, in rank order, with the model's predictions pre-filled.
    task_list = json.loads(tasks.read_text())
    assert [t["data"]["sha256"] for t in task_list] == [r["sha256"] for r in rows]
    model_id = task_list[0]["predictions"][0]["model_version"]
    assert len(model_id) == 64 and tasks.with_name("tasks.label_config.xml").is_file()


def all_shas(engine: Engine) -> list[str]:
    """Every photo the catalog's models tagged."""
    with engine.connect() as conn:
        return list(conn.scalars(sa.select(predictions.c.sha256).distinct()))


def test_select_diversity_and_errors(tagged: dict, tmp_path: Path):
    engine = open_catalog(str(tagged["url"]))
    info = select(engine, "margin+kcenter", 6, tmp_path / "div.csv", seed=0)
    assert info["selected"] == 6 and info["pool"] == 30
    picked = [r["sha256"] for r in csv.DictReader((tmp_path / "div.csv").open())]
    assert len(set(picked)) == 6
    info = select(engine, "badge", 6, tmp_path / "badge.csv", seed=0)  # the stored top-k and embeddings
    assert info["selected"] == 6 and len({r["sha256"] for r in csv.DictReader((tmp_path / "badge.csv").open())}) == 6
    # balanced: the catalog's stored top-k probabilities, every photo in sha256 order, ranked by balanced_boundary
    info = select(engine, "balanced", 6, tmp_path / "bal.csv", seed=0)
    picked = [r["sha256"] for r in csv.DictReader((tmp_path / "bal.csv").open())]
    with engine.connect() as conn:
        model_id, schema = resolve_model(conn, None)
    shas = sorted(all_shas(engine))  # select's pool: nothing is labelled here
    want = balanced_boundary(catalog_probabilities(engine, model_id, schema, shas), 6, seed=0)
    assert info["selected"] == 6 and picked == [shas[i] for i in want]
    with pytest.raises(SearchError, match=r"no model with id 'feedbeef' in the catalog; models: \["):
        select(engine, "margin", 3, tmp_path / "x.csv", model="feedbeef")
    everything = tmp_path / "all.txt"
    everything.write_text("".join(f"{p}\n" for p in sorted(Path(tagged["photos"]).glob("*.jpg"))))
    with pytest.raises(SearchError, match=r"every photo model \w+ tagged is labelled already"):
        select(engine, "random", 3, tmp_path / "y.csv", labelled=everything)
