"""What prediction uses: a run's calibration.json decodes `eval`, `predict` (files and --split) and every
export; the torch backend, the onnx backend and the bundle's standalone predict_onnx.py decode alike in
each mode; an unknown mode is a clear error; bundles without decoding modes keep working."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import tiny_overrides
from test_calibrate import csv_dataset

from fashattr.calibrate import CALIBRATION, calibrate_run
from fashattr.cli import main
from fashattr.config import load_config
from fashattr.deploy.bundle import write_bundle
from fashattr.deploy.runtime import Runtime
from fashattr.engine.trainer import fit
from fashattr.schema import Schema

MODES = ("none", "accuracy", "balanced")


@pytest.fixture(scope="module")
def setup(tiny_data: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run with single- and multi-label groups, its bundle before calibration, then calibrated with
    hand-set decodings (so that each mode's classes are known), and its ONNX bundle."""
    pytest.importorskip("onnxruntime")
    root = tmp_path_factory.mktemp("modes")
    over = tiny_overrides(
        csv_dataset(tiny_data, root),
        cache_dir,
        root / "runs",
        name="modes",
        **{"data.format": "csv", "data.reader_options": "{multi_label: [tags]}", "train.epochs": 1},
    )
    run = fit(load_config(None, over))
    old = write_bundle(run, root / "old", formats=("onnx",))  # exported before calibrate: no modes
    calibrate_run(run, folds=2)
    cal = json.loads((run / CALIBRATION).read_text())
    schema = Schema.load(run / "schema.yaml")
    # accuracy: pattern's 4th class wins every image; tags: the first class always, the second never.
    forced = [0.0] * schema["pattern"].num_classes
    forced[3] = 1000.0
    cal["modes"]["accuracy"]["offsets"]["pattern"] = forced
    cal["thresholds"]["tags"] = [-1000.0, 1000.0]
    (run / CALIBRATION).write_text(json.dumps(cal))
    bundle = write_bundle(run, root / "new", formats=("onnx",))
    photos = sorted((tiny_data / "img").glob("*.jpg"))[:24]
    return {"run": run, "old": old, "bundle": bundle, "root": root, "photos": photos}  # type: ignore[dict-item]


def classes(records: list[dict]) -> list[dict]:
    return [
        {g: ([x["class"] for x in v] if isinstance(v, list) else v["class"]) for g, v in r["groups"].items()}
        for r in records
    ]


def test_bundle_carries_the_runs_decoding(setup: dict):
    config = json.loads((setup["bundle"] / "config.json").read_text())
    cal = json.loads((setup["run"] / CALIBRATION).read_text())
    dec = config["decoding"]
    assert dec["default"] == "balanced" and set(dec["modes"]) == {"accuracy", "balanced"}
    assert dec["logit_adjust"] == {"offsets": cal["modes"]["balanced"]["offsets"]}
    assert dec["calibration"] == {"temperature": cal["modes"]["balanced"]["temperature"]}
    assert dec["modes"]["accuracy"]["logit_adjust"]["offsets"]["pattern"][3] == 1000.0
    assert dec["thresholds"] == {"tags": [-1000.0, 1000.0]} and dec["multi_label_threshold_logit"] == 0.0
    assert dec["fitted_on"]["split"] == "holdout" and dec["fitted_on"]["weights"] == "best.safetensors"
    rt = Runtime.from_bundle(setup["bundle"])
    assert rt.decode_modes == ["accuracy", "balanced"] and rt.default_decode == "balanced"
    card = (setup["bundle"] / "README.md").read_text()
    assert (
        "## Decoding" in card and "Default mode: `balanced`" in card and "- `accuracy` (best overall accuracy)" in card
    )
    assert "## Decoding" not in (setup["old"] / "README.md").read_text()


def test_torch_onnx_and_standalone_decode_alike_in_every_mode(setup: dict, tmp_path: Path):
    photos = setup["photos"]
    torch_rt = Runtime.from_bundle(setup["bundle"])
    onnx_rt = Runtime.from_bundle(setup["bundle"], "onnx", threads=1)
    run_rt = Runtime.from_run(setup["run"])
    pattern = list(torch_rt.schema["pattern"].classes)
    seen = {}
    for mode in MODES:
        got = list(torch_rt.predict_files(photos, batch_size=8, decode=mode))
        assert {r["decoding"] for r in got} == {mode}
        out = tmp_path / f"{mode}.jsonl"
        cmd = [sys.executable, str(setup["bundle"] / "predict_onnx.py"), str(setup["bundle"]), *map(str, photos)]
        r = subprocess.run([*cmd, "--decode", mode, "--out", str(out)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        standalone = [json.loads(line) for line in out.read_text().splitlines()]
        assert classes(standalone) == classes(got), mode
        assert classes(list(onnx_rt.predict_files(photos, batch_size=8, decode=mode))) == classes(got), mode
        assert classes(list(run_rt.predict_files(photos, batch_size=8, decode=mode))) == classes(got), mode
        seen[mode] = classes(got)
    # The hand-set decodings: accuracy forces pattern's 4th class and the tags thresholds apply in both modes.
    assert {c["pattern"] for c in seen["accuracy"]} == {pattern[3]}
    tags = torch_rt.schema["tags"].classes
    assert all(c["tags"] == [tags[0]] for m in ("accuracy", "balanced") for c in seen[m])
    assert any(c["tags"] != [tags[0]] for c in seen["none"])  # the raw model decides on logit > 0
    # No mode named: the bundle's default (balanced), recorded as such.
    default = list(torch_rt.predict_files(photos, batch_size=8))
    assert classes(default) == seen["balanced"] and default[0]["decoding"] == "balanced"


def test_probabilities_follow_the_mode(setup: dict):
    rt = Runtime.from_bundle(setup["bundle"])
    pixels = np.stack([rt.preprocess(p) for p in setup["photos"][:4]])
    logits = rt.logits(pixels)
    acc = rt.decode(logits, decode="accuracy")
    temps = rt.config["decoding"]["modes"]["accuracy"]["calibration"]["temperature"]
    # softmax((z + offsets) / T): the forced class takes all of it.
    assert all(r["groups"]["pattern"]["prob"] == 1.0 for r in acc)
    z = logits["sleeve"].astype(np.float64) + np.asarray(
        rt.config["decoding"]["modes"]["accuracy"]["logit_adjust"]["offsets"]["sleeve"]
    )
    e = np.exp(z / temps["sleeve"] - (z / temps["sleeve"]).max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    assert [r["groups"]["sleeve"]["prob"] for r in acc] == [round(float(v), 6) for v in p.max(1)]


def test_unknown_mode_is_a_clear_error(setup: dict, capsys: pytest.CaptureFixture[str]):
    rt = Runtime.from_bundle(setup["bundle"])
    want = r"unknown decoding mode 'fast'; choose from \['none', 'accuracy', 'balanced'\]"
    with pytest.raises(ValueError, match=want):
        rt.decode(rt.logits(np.stack([rt.preprocess(setup["photos"][0])])), decode="fast")
    with pytest.raises(ValueError, match=want):
        next(rt.predict_files(setup["photos"], decode="fast"))
    assert main(["predict", str(setup["bundle"]), str(setup["photos"][0]), "--decode", "fast"]) == 2
    assert "error: unknown decoding mode 'fast'" in capsys.readouterr().err
    cmd = [sys.executable, str(setup["bundle"] / "predict_onnx.py"), str(setup["bundle"]), str(setup["photos"][0])]
    r = subprocess.run([*cmd, "--decode", "fast"], capture_output=True, text=True)
    assert r.returncode == 2 and "error: unknown decoding mode 'fast'" in r.stderr


def test_bundles_without_modes_keep_working(setup: dict):
    old = setup["old"]
    assert "modes" not in json.loads((old / "config.json").read_text())["decoding"]
    for backend in ("torch", "onnx"):
        rt = Runtime.from_bundle(old, backend)
        assert rt.decode_modes == [] and rt.default_decode is None
        plain = list(rt.predict_files(setup["photos"], batch_size=8))
        assert {r["decoding"] for r in plain} == {None}
        raw = list(rt.predict_files(setup["photos"], batch_size=8, decode="none"))
        assert classes(raw) == classes(plain)
        with pytest.raises(ValueError, match=r"choose from \['none'\] \(this model has no decoding modes: run"):
            rt.check_decode("accuracy")


def test_eval_and_the_challenge_file_decode_too(setup: dict, capsys: pytest.CaptureFixture[str]):
    run = setup["run"]
    assert main(["eval", str(run), "--decode", "accuracy"]) == 0
    assert "decoding: accuracy" in capsys.readouterr().out
    report = json.loads((run / "eval_holdout.json").read_text())
    assert report["decoding"] == "accuracy"
    pattern = report["groups"]["pattern"]["classes"]
    assert [c["predicted"] for c in pattern.values()][3] == report["groups"]["pattern"]["n"]  # all the forced class
    assert main(["eval", str(run)]) == 0
    assert "decoding: balanced" in capsys.readouterr().out
    assert main(["eval", str(run), "--decode", "none"]) == 0
    raw = json.loads((run / "eval_holdout.json").read_text())
    best = json.loads((run / "summary.json").read_text())["best"]
    assert raw["decoding"] == "none" and raw["summary"]["avg_class_acc"] == pytest.approx(best["avg_class_acc"])
    out = setup["root"] / "prediction.txt"
    assert main(["predict", str(run), "--split", "holdout", "--decode", "accuracy", "--out", str(out)]) == 2
    assert "single-label groups only" in capsys.readouterr().err  # a multi-label schema has no challenge file


def test_challenge_file_is_decoded(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    run = fit(load_config(None, tiny_overrides(tiny_data, cache_dir, tmp_path, name="ai", **{"train.epochs": 1})))
    calibrate_run(run, folds=2)
    cal = json.loads((run / CALIBRATION).read_text())
    cal["modes"]["accuracy"]["offsets"]["pattern"] = [0.0, 0.0, 0.0, 1000.0, 0.0, 0.0, 0.0]
    cal["modes"]["balanced"]["offsets"]["sleeve"] = [0.0, 0.0, 1000.0]
    (run / CALIBRATION).write_text(json.dumps(cal))
    out = tmp_path / "prediction.txt"
    assert main(["predict", str(run), "--split", "test", "--decode", "accuracy", "--out", str(out)]) == 0
    rows = [line.split() for line in out.read_text().splitlines()]
    assert len(rows) == 20 and {r[0] for r in rows} == {"3"}
    assert main(["predict", str(run), "--split", "test", "--out", str(out)]) == 0  # the default: balanced
    rows = [line.split() for line in out.read_text().splitlines()]
    assert {r[1] for r in rows} == {"2"}


def test_the_service_decodes_in_the_mode_asked_for(setup: dict):
    """`fashattr serve`'s ?decode= on a real uvicorn: each mode's classes as the runtime decodes them."""
    from test_serve import LiveServer

    from fashattr.serve import ServeSettings, create_app

    rt = Runtime.from_bundle(setup["bundle"], "onnx")
    photo = setup["photos"][0]
    expected = {m: classes(list(rt.predict_files([photo], decode=m))) for m in MODES}
    assert expected["accuracy"][0]["pattern"] == rt.schema["pattern"].classes[3]  # the forced offset wins
    with LiveServer(create_app(rt, ServeSettings())) as server:

        def ask(**params: str) -> httpx.Response:
            files = [("file", (photo.name, photo.read_bytes(), "image/jpeg"))]
            return httpx.post(server.url + "/v1/predict", files=files, params=params, timeout=30)

        for mode in MODES:
            body = ask(decode=mode).json()
            assert body["decoding"] == mode and classes(body["results"]) == expected[mode]
        assert ask().json()["decoding"] == "balanced"  # the bundle's default
        r = ask(decode="fastest")
        assert r.status_code == 400 and "'fastest'" in r.json()["error"] and "accuracy" in r.json()["error"]
