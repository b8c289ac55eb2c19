"""Catalog search, label export, similar items and duplicates on a real tiny bundle and real image files,
in SQLite and PostgreSQL; the FashionDataset's byte-identical pairs come out first."""

from __future__ import annotations

import csv
import io
import json
import shutil
import xml.etree.ElementTree as ET
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny_overrides
from PIL import Image

from fashattr.catalog import db
from fashattr.catalog.export import export_labels, label_config
from fashattr.catalog.search import Condition, SearchError, contact_sheet, open_catalog, search, write_matches
from fashattr.catalog.similar import bundle_model_id, duplicates, similar
from fashattr.cli import main
from fashattr.config import load_config
from fashattr.deploy.bundle import write_bundle
from fashattr.deploy.runtime import Runtime
from fashattr.engine.trainer import fit
from fashattr.portable.bundle import file_sha256
from fashattr.portable.images import open_image

GROUPS = ["pattern", "sleeve", "length", "neckline", "fabric", "fit"]


def tag_rows(engine: Any, runtime: Runtime | None, model_id: str, paths: list[Path]) -> dict[str, dict[str, Any]]:
    """Write images, paths, predictions and embeddings as tagging does (catalog.db's tables); returns
    per sha256 the decoded groups and the embedding."""
    now = db.now()
    by_sha: dict[str, list[Path]] = {}
    for p in paths:
        by_sha.setdefault(file_sha256(p), []).append(p)
    out: dict[str, dict[str, Any]] = {}
    with engine.begin() as conn:
        if runtime is not None:
            db.register_model(conn, model_id, runtime.config, "tiny")
        for sha, ps in by_sha.items():
            w, h = open_image(ps[0]).size if runtime is not None else (None, None)
            row = {"sha256": sha, "bytes": ps[0].stat().st_size, "width": w, "height": h}
            db.touch(conn, db.images, [{**row, "first_seen": now, "last_seen": now}], ["sha256"])
            rows = [{"sha256": sha, "path": str(p), "first_seen": now, "last_seen": now} for p in ps]
            db.touch(conn, db.image_paths, rows, ["sha256", "path"])
        if runtime is None:
            return out
        shas = list(by_sha)
        logits, feats = runtime.infer(np.stack([runtime.preprocess(by_sha[s][0]) for s in shas]))
        for sha, dec, f in zip(shas, runtime.decode(logits), feats, strict=True):
            out[sha] = {"groups": {g: v["class"] for g, v in dec["groups"].items()}, "probs": dec["groups"], "vec": f}
            preds = [
                {
                    "sha256": sha, "model_id": model_id, "group_name": g, "class_name": v["class"],
                    "class_index": v["index"], "probability": v["prob"], "top_k": None, "decoding": None,
                    "created": now,
                }
                for g, v in dec["groups"].items()
            ]  # fmt: skip
            db.insert_ignore(conn, db.predictions, preds)
            vec = {"sha256": sha, "model_id": model_id, "dim": len(f), "vector": f.astype("<f4").tobytes()}
            db.insert_ignore(conn, db.embeddings, [vec])
    return out


@pytest.fixture(scope="module")
def bundle(tiny_data: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    run = fit(load_config(None, tiny_overrides(tiny_data, cache_dir, out, name="cs", **{"train.epochs": 1})))
    return write_bundle(run, tmp_path_factory.mktemp("bundles") / "cs")


@pytest.fixture(scope="module")
def photos(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 photos, one of them twice under another name (byte-identical), one as a PNG (other bytes, same pixels)."""
    root = tmp_path_factory.mktemp("photos") / "shop"
    (root / "a").mkdir(parents=True)
    for f in sorted((tiny_data / "img").glob("*.jpg"))[:40]:
        shutil.copyfile(f, root / "a" / f.name)
    (root / "b").mkdir()
    shutil.copyfile(root / "a" / "00007.jpg", root / "b" / "copy_of_7.jpg")
    Image.open(root / "a" / "00011.jpg").save(root / "b" / "resaved_11.png")
    return root


@pytest.fixture(scope="module")
def catalog(bundle: Path, photos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'catalog.db'}"
    engine = db.open_db(url)
    runtime = Runtime.from_bundle(bundle)
    model_id = bundle_model_id(bundle)
    truth = tag_rows(engine, runtime, model_id, sorted(p for p in photos.rglob("*") if p.is_file()))
    return {"url": url, "engine": engine, "model_id": model_id, "truth": truth, "runtime": runtime}


def expected_matches(truth: dict[str, Any], conds: dict[str, str], min_prob: float = 0.0) -> list[str]:
    """Content hashes meeting every condition, by the first condition's probability (then hash), best first."""
    first = next(iter(conds))
    hits = [
        (s, t["probs"][first]["prob"])
        for s, t in truth.items()
        if all(t["groups"][g] == c and t["probs"][g]["prob"] >= min_prob for g, c in conds.items())
    ]
    return [s for s, _ in sorted(hits, key=lambda x: (-x[1], x[0]))]


def common_pair(truth: dict[str, Any]) -> dict[str, str]:
    """The most frequent (sleeve, pattern) pair among the tagged images, so the search has matches."""
    counts: dict[tuple[str, str], int] = {}
    for t in truth.values():
        key = (t["groups"]["sleeve"], t["groups"]["pattern"])
        counts[key] = counts.get(key, 0) + 1
    (sleeve, pattern), _ = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    return {"sleeve": sleeve, "pattern": pattern}


def test_search_returns_exactly_the_matching_images_best_first(catalog: dict[str, Any], tmp_path: Path):
    truth, engine = catalog["truth"], catalog["engine"]
    conds = common_pair(truth)
    want = expected_matches(truth, conds)
    assert len(want) >= 2
    res = search(engine, [f"{g}={c}" for g, c in conds.items()], limit=100)
    assert res.model_id == catalog["model_id"]
    assert [m.sha256 for m in res.matches] == want
    for m in res.matches:
        assert m.probs == {g: truth[m.sha256]["probs"][g]["prob"] for g in conds}
        assert Path(m.path).is_file() and file_sha256(Path(m.path)) == m.sha256
    # --min-prob and --limit
    cut = sorted(truth[s]["probs"]["sleeve"]["prob"] for s in want)[len(want) // 2]
    res2 = search(engine, [Condition(g, c) for g, c in conds.items()], min_prob=cut, limit=1000)
    assert [m.sha256 for m in res2.matches] == expected_matches(truth, conds, cut)
    assert [m.sha256 for m in search(engine, [f"sleeve={conds['sleeve']}"], limit=3).matches] == expected_matches(
        truth, {"sleeve": conds["sleeve"]}
    )[:3]
    # Output formats
    rows = list(csv.DictReader(io.StringIO(write_matches(res, "csv"))))
    assert [r["sha256"] for r in rows] == want and float(rows[0]["sleeve_prob"]) == pytest.approx(
        res.matches[0].probs["sleeve"], abs=1e-6
    )
    lines = [json.loads(x) for x in write_matches(res, "jsonl").splitlines()]
    assert [x["path"] for x in lines] == [m.path for m in res.matches]
    table = write_matches(res, "table").splitlines()
    assert table[0].split() == ["path", f"sleeve={conds['sleeve']}", f"pattern={conds['pattern']}"]
    assert table[-1] == f"{len(want)} match(es), model {catalog['model_id'][:12]}"
    # Contact sheet: a grid of thumbnails, columns x rows as laid out.
    sheet = Image.open(contact_sheet(res, tmp_path / "sheet.png", columns=3, thumb=64))
    rows_n = -(-len(want) // 3)
    assert sheet.size == (min(3, len(want)) * 72 + 8, rows_n * (64 + 3 * 12 + 6) + 8)


def test_search_errors_name_the_choices(catalog: dict[str, Any], tmp_path: Path):
    engine = catalog["engine"]
    with pytest.raises(SearchError, match=r"unknown group 'sleve' in sleve=long; groups: \['pattern', 'sleeve'"):
        search(engine, ["sleve=long"])
    classes = catalog["runtime"].schema["sleeve"].classes
    with pytest.raises(SearchError) as e:
        search(engine, ["sleeve=long"])
    assert str(e.value) == f"unknown class 'long' of group 'sleeve'; classes: {list(classes)}"
    with pytest.raises(SearchError, match="condition 'sleeve': expected GROUP=CLASS"):
        search(engine, ["sleeve"])
    with pytest.raises(SearchError, match=r"no model with id 'ffff' in the catalog; models: \['"):
        search(engine, ["sleeve=" + classes[0]], model="ffff")
    with pytest.raises(SearchError, match=r"no catalog database at .*nothing\.db; tag images"):
        open_catalog(f"sqlite:///{tmp_path / 'nothing.db'}")
    empty = db.open_db(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(SearchError, match="has no model yet; tag images first"):
        search(empty, ["sleeve=x"])
    err = io.StringIO()
    from contextlib import redirect_stderr

    with redirect_stderr(err):
        assert main(["search", "--db", catalog["url"], "fit=baggy"]) == 2
    assert "error: unknown class 'baggy' of group 'fit'; classes:" in err.getvalue()


def test_search_cli_and_postgresql_give_the_same_matches(
    catalog: dict[str, Any], bundle: Path, photos: Path, pg_cluster: Any, tmp_path: Path
):
    conds = common_pair(catalog["truth"])
    args = [f"{g}={c}" for g, c in conds.items()]
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert (
            main(["search", "--db", catalog["url"], *args, "--format", "jsonl", "--sheet", str(tmp_path / "s.png")])
            == 0
        )
    got = [json.loads(x)["sha256"] for x in buf.getvalue().splitlines()]
    assert got == expected_matches(catalog["truth"], conds) and (tmp_path / "s.png").is_file()
    pg = db.open_db(pg_cluster.create_database("catalog_search"))
    tag_rows(pg, catalog["runtime"], catalog["model_id"], sorted(p for p in photos.rglob("*") if p.is_file()))
    res = search(pg, args, limit=100)
    assert [m.sha256 for m in res.matches] == got
    pg.dispose()


def test_export_label_studio_tasks_match_their_labeling_config(catalog: dict[str, Any], tmp_path: Path, photos: Path):
    truth = catalog["truth"]
    info = export_labels(catalog["engine"], "label-studio", tmp_path / "ls" / "tasks.json", image_root=photos)
    assert info["images"] == len(truth) and info["config"] == str(tmp_path / "ls" / "tasks.label_config.xml")
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    view = ET.fromstring(Path(info["config"]).read_text())
    image = view.find("Image")
    assert image is not None and image.get("name") == "image" and image.get("value") == "$image"
    choices = {c.get("name"): c for c in view.iter("Choices")}
    assert list(choices) == GROUPS and all(c.get("toName") == "image" for c in choices.values())
    assert [t["data"]["sha256"] for t in tasks] == sorted(truth)
    for t in tasks:
        assert t["data"]["image"].startswith("/data/local-files/?d=a/") or t["data"]["image"].startswith(
            "/data/local-files/?d=b/"
        )
        (pred,) = t["predictions"]
        assert pred["model_version"] == catalog["model_id"]
        want = truth[t["data"]["sha256"]]
        assert [r["from_name"] for r in pred["result"]] == GROUPS
        for r in pred["result"]:
            assert r["to_name"] == "image" and r["type"] == "choices"
            (value,) = r["value"]["choices"]
            assert value == want["groups"][r["from_name"]]
            allowed = [c.get("value") for c in choices[r["from_name"]].iter("Choice")]
            assert value in allowed
        assert pred["score"] == pytest.approx(np.mean([want["probs"][g]["prob"] for g in GROUPS]), abs=1e-6)
    with pytest.raises(SearchError, match="is outside --image-root"):
        export_labels(catalog["engine"], "label-studio", tmp_path / "x.json", image_root=photos / "a")
    assert 'choice="multiple"' in label_config({"groups": [{"name": "tags", "kind": "multi", "classes": ["a", "b"]}]})


def test_export_csv_and_parquet_one_row_per_image(catalog: dict[str, Any], tmp_path: Path):
    import pyarrow.parquet as pq

    truth = catalog["truth"]
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(["export-labels", "--db", catalog["url"], "--format", "csv", "--out", str(tmp_path / "l.csv")])
    assert code == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "l.csv").read_text(encoding="utf-8"))))
    assert list(rows[0]) == ["path", "sha256", *(c for g in GROUPS for c in (g, f"{g}_prob"))]
    assert [r["sha256"] for r in rows] == sorted(truth)
    for r in rows:
        assert all(r[g] == truth[r["sha256"]]["groups"][g] for g in GROUPS)
    table = pq.read_table(export_labels(catalog["engine"], "parquet", tmp_path / "l.parquet")["out"]).to_pylist()
    assert [r["sha256"] for r in table] == sorted(truth)
    assert all(r["fit_prob"] == truth[r["sha256"]]["probs"]["fit"]["prob"] for r in table)


def test_similar_items_agree_with_exact_cosine_and_respect_same(catalog: dict[str, Any], bundle: Path, photos: Path):
    truth, engine = catalog["truth"], catalog["engine"]
    photo = photos / "a" / "00003.jpg"
    own = file_sha256(photo)
    shas = sorted(truth)
    vecs = np.stack([truth[s]["vec"] for s in shas]).astype(np.float64)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    q = vecs[shas.index(own)]
    order = [shas[i] for i in np.argsort(-(vecs @ q), kind="stable") if shas[i] != own]
    res = similar(engine, photo, catalog["runtime"], catalog["model_id"], k=5)
    assert res.index == "flat" and res.query == truth[own]["groups"]
    assert [n.sha256 for n in res.neighbours] == order[:5]  # the photo's own content is left out
    assert [n.score for n in res.neighbours] == pytest.approx(
        sorted((vecs @ q)[[shas.index(s) for s in order[:5]]])[::-1], abs=1e-5
    )
    # HNSW on 40 items finds the same neighbours.
    assert [
        n.sha256
        for n in similar(engine, photo, catalog["runtime"], catalog["model_id"], 5, index_kind="hnsw").neighbours
    ] == order[:5]
    same = similar(engine, photo, catalog["runtime"], catalog["model_id"], k=50, same=["sleeve", "length"])
    want = [s for s in order if all(truth[s]["groups"][g] == truth[own]["groups"][g] for g in ("sleeve", "length"))]
    # Every item sharing both classes, by cosine (two items with the same pixels tie: compare as sets there).
    assert sorted(n.sha256 for n in same.neighbours) == sorted(want)
    cos = {s: float(vecs[shas.index(s)] @ q) for s in want}
    assert [n.score for n in same.neighbours] == pytest.approx(sorted(cos.values(), reverse=True), abs=1e-5)
    assert all(n.classes["sleeve"] == res.query["sleeve"] for n in same.neighbours)
    with pytest.raises(SearchError, match=r"--same: unknown group\(s\) \['colour'\]"):
        similar(engine, photo, catalog["runtime"], catalog["model_id"], same=["colour"])
    buf = io.StringIO()
    with redirect_stdout(buf):
        args = ["similar", str(photo), "--db", catalog["url"], "--bundle", str(bundle), "-k", "3", "--format", "jsonl"]
        assert main(args) == 0
    assert [json.loads(x)["sha256"] for x in buf.getvalue().splitlines()] == order[:3]
    # Without a bundle: the catalog's own model, the photo's stored embedding and labels (it is in the catalog).
    stored = similar(engine, photo, None, None, k=5)
    assert stored.model_id == catalog["model_id"] and stored.query == truth[own]["groups"]
    assert [n.sha256 for n in stored.neighbours] == order[:5]
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["similar", str(photo), "--db", catalog["url"], "-k", "3", "--format", "jsonl"]) == 0
    assert [json.loads(x)["sha256"] for x in buf.getvalue().splitlines()] == order[:3]
    new = photos.parent / "new.jpg"
    from PIL import Image

    Image.new("RGB", (40, 48), (10, 200, 30)).save(new)
    with pytest.raises(SearchError, match=r"new.jpg is not in the catalog of model .*: pass --bundle BUNDLE"):
        similar(engine, new, None, None)


def test_duplicates_identical_first_then_near_by_similarity(catalog: dict[str, Any], photos: Path):
    truth = catalog["truth"]
    shas = sorted(truth)
    vecs = np.stack([truth[s]["vec"] for s in shas]).astype(np.float64)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    sim = vecs @ vecs.T
    iu = np.triu_indices(len(shas), 1)
    threshold = float(np.sort(sim[iu])[-4])  # the 4 most similar pairs of different contents
    pairs = duplicates(catalog["engine"], threshold=threshold - 1e-6, k=len(shas))
    assert pairs[0].kind == "identical" and {Path(pairs[0].a).name, Path(pairs[0].b).name} == {
        "00007.jpg",
        "copy_of_7.jpg",
    }
    near = pairs[1:]
    assert all(p.kind == "near" for p in near) and len(near) == 4
    want = sorted(
        ((sim[i, j], shas[i], shas[j]) for i, j in zip(*iu, strict=True) if sim[i, j] >= threshold - 1e-6), reverse=True
    )
    assert [(p.sha256_a, p.sha256_b) for p in near] == [(a, b) for _, a, b in want]
    assert [p.similarity for p in near] == pytest.approx([s for s, _, _ in want], abs=1e-5)
    resaved = {file_sha256(photos / "a" / "00011.jpg"), file_sha256(photos / "b" / "resaved_11.png")}
    assert {near[0].sha256_a, near[0].sha256_b} == resaved and near[0].similarity == pytest.approx(1.0, abs=1e-6)


@pytest.mark.realdata
def test_fashion_dataset_byte_identical_pairs_come_out_first(real_data: Path, tmp_path: Path):
    engine = db.open_db(f"sqlite:///{tmp_path / 'real.db'}")
    files = sorted((real_data / "img").glob("*.jpg"))
    assert len(files) == 7000
    tag_rows(engine, None, "", files)  # images and paths only: no model needed to find identical bytes
    pairs = duplicates(engine)
    got = sorted((Path(p.a).name, Path(p.b).name) for p in pairs if p.kind == "identical")
    # Found once by hashing every file (sha256) and checked byte by byte.
    assert got == [
        ("00004.jpg", "03006.jpg"),
        ("00343.jpg", "02502.jpg"),
        ("00848.jpg", "04493.jpg"),
        ("03536.jpg", "03756.jpg"),
        ("03588.jpg", "04375.jpg"),
        ("04953.jpg", "06995.jpg"),
    ]
    assert all(p.kind == "identical" for p in pairs[:6]) and len(pairs) == 6
    for p in pairs:
        assert Path(p.a).read_bytes() == Path(p.b).read_bytes()


def test_index_cache_is_reused_until_the_embeddings_change(catalog: dict[str, Any], bundle: Path, tmp_path: Path):
    from fashattr.catalog.similar import catalog_index

    engine, model_id = catalog["engine"], catalog["model_id"]
    shas, built = catalog_index(engine, model_id, "hnsw", tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / "meta.json").read_text())
    assert meta["kind"] == "hnsw" and meta["n"] == len(shas) == len(catalog["truth"])
    stamp = (tmp_path / "ix" / "index.faiss").stat().st_mtime_ns
    shas2, loaded = catalog_index(engine, model_id, "hnsw", tmp_path / "ix")
    assert shas2 == shas and (tmp_path / "ix" / "index.faiss").stat().st_mtime_ns == stamp  # loaded, not rebuilt
    assert isinstance(loaded.vectors, np.memmap) and np.array_equal(np.asarray(loaded.vectors), built.vectors)
    q = built.vectors[:3]
    assert np.array_equal(loaded.search(q, 5)[1], built.search(q, 5)[1])
    # Another index kind in the same folder: a different fingerprint, so it is rebuilt.
    _, other = catalog_index(engine, model_id, "flat", tmp_path / "ix")
    assert other.kind == "flat" and json.loads((tmp_path / "ix" / "meta.json").read_text())["kind"] == "flat"


def test_fashattr_tag_then_search_similar_duplicates_export(
    catalog: dict[str, Any], bundle: Path, photos: Path, tmp_path: Path
):
    """The whole path through the CLI: `fashattr tag` writes the catalog, the catalog commands read it."""
    url = f"sqlite:///{tmp_path / 'tagged.db'}"
    with redirect_stdout(io.StringIO()):
        assert main(["tag", str(bundle), str(photos), "--db", url, "--no-progress", "--backend", "torch"]) == 0
    truth = catalog["truth"]
    conds = common_pair(truth)
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["search", "--db", url, *(f"{g}={c}" for g, c in conds.items()), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["sha256"] for r in rows] == expected_matches(truth, conds)
    photo = photos / "a" / "00003.jpg"
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["similar", str(photo), "--db", url, "--bundle", str(bundle), "-k", "4", "--format", "jsonl"]) == 0
    mine = similar(catalog["engine"], photo, catalog["runtime"], catalog["model_id"], k=4)
    got = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [g["sha256"] for g in got] == [n.sha256 for n in mine.neighbours]
    assert [g["score"] for g in got] == pytest.approx([n.score for n in mine.neighbours], abs=1e-5)
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["duplicates", "--db", url, "--format", "jsonl", "--threshold", "0.999999"]) == 0
    pairs = [json.loads(x) for x in out.getvalue().splitlines()]
    assert pairs[0]["kind"] == "identical" and {Path(pairs[0]["a"]).name, Path(pairs[0]["b"]).name} == {
        "00007.jpg",
        "copy_of_7.jpg",
    }
    assert {Path(pairs[1]["a"]).name, Path(pairs[1]["b"]).name} == {"00011.jpg", "resaved_11.png"}
    info = export_labels(open_catalog(url), "label-studio", tmp_path / "t.json")
    assert info["images"] == len(truth) and info["model_id"] == catalog["model_id"]


def test_multi_label_groups_match_whole_classes(tmp_path: Path):
    """Multi-label rows hold the predicted classes joined by '|': a condition matches one whole class
    (LIKE wildcards in class names are escaped), and Label Studio gets every predicted class."""
    engine = db.open_db(f"sqlite:///{tmp_path / 'm.db'}")
    schema = {
        "groups": [
            {"name": "tags", "kind": "multi", "classes": ["lace", "x_y", "xzy", "zip"]},
            {"name": "sleeve", "kind": "single", "classes": ["long", "short"]},
        ]
    }
    rows = {  # sha -> (tags, tags prob, sleeve, sleeve prob)
        "a" * 64: ("lace|zip", 0.9, "long", 0.8),
        "b" * 64: ("zip", 0.7, "long", 0.6),
        "c" * 64: ("", 0.0, "long", 0.9),
        "d" * 64: ("xzy|lace", 0.8, "short", 0.7),
        "e" * 64: ("x_y", 0.6, "short", 0.5),
    }
    now = db.now()
    with engine.begin() as conn:
        db.register_model(conn, "m" * 64, {"schema": schema}, "multi")
        for sha, (tags, tp, sleeve, sp) in rows.items():
            db.touch(conn, db.images, [{"sha256": sha, "bytes": 1, "first_seen": now, "last_seen": now}], ["sha256"])
            path = {"sha256": sha, "path": f"/shop/{sha[0]}.jpg", "first_seen": now, "last_seen": now}
            db.touch(conn, db.image_paths, [path], ["sha256", "path"])
            preds = [
                {"sha256": sha, "model_id": "m" * 64, "group_name": "tags", "class_name": tags, "class_index": -1,
                 "probability": tp, "created": now},
                {"sha256": sha, "model_id": "m" * 64, "group_name": "sleeve", "class_name": sleeve,
                 "class_index": 0, "probability": sp, "created": now},
            ]  # fmt: skip
            db.insert_ignore(conn, db.predictions, preds)

    def shas(*conds: str) -> list[str]:
        return [m.sha256[0] for m in search(engine, list(conds)).matches]

    assert shas("tags=lace") == ["a", "d"]  # first and last element of a list, best first
    assert shas("tags=zip", "sleeve=long") == ["a", "b"]
    assert shas("tags=x_y") == ["e"]  # '_' is not a wildcard: xzy does not match
    assert shas("tags=xzy") == ["d"]
    assert shas("sleeve=long", "tags=lace") == ["a"]
    export_labels(engine, "label-studio", tmp_path / "t.json")
    tasks = {t["data"]["sha256"][0]: t for t in json.loads((tmp_path / "t.json").read_text())}
    tags = {k: [r for r in t["predictions"][0]["result"] if r["from_name"] == "tags"] for k, t in tasks.items()}
    assert tags["a"][0]["value"]["choices"] == ["lace", "zip"] and tags["c"] == []  # nothing predicted: no region
    config = ET.fromstring((tmp_path / "t.label_config.xml").read_text())
    assert [c.get("choice") for c in config.iter("Choices")] == ["multiple", "single"]
