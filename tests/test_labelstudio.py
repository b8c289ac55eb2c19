"""`data.format: labelstudio`: Label Studio's JSON export read back for training, written here as Label Studio
writes it (tasks, annotations with choices results, cancelled ones, local-file and upload references), on real
image files; and fashattr's own pre-annotations, corrected as a person would, read back."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny_overrides

from fashattr.config import load_config
from fashattr.data.formats import create_reader, infer_format
from fashattr.data.table import UNKNOWN
from fashattr.engine.trainer import fit
from fashattr.errors import DatasetError


def annotation(choices: dict[str, list[str]], updated: str, cancelled: bool = False, ident: int = 1) -> dict:
    result = [
        {"id": f"r{g}", "from_name": g, "to_name": "image", "type": "choices", "value": {"choices": c}}
        for g, c in choices.items()
    ]
    return {
        "id": ident,
        "completed_by": 1,
        "result": result,
        "was_cancelled": cancelled,
        "ground_truth": False,
        "created_at": "2026-12-01T10:00:00.000000Z",
        "updated_at": updated,
        "lead_time": 4.2,
    }


def task(ident: int, image: str, annotations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": ident,
        "annotations": annotations,
        "file_upload": None,
        "drafts": [],
        "predictions": [],
        "data": {"image": image},
        "meta": {},
        "created_at": "2026-12-01T09:00:00.000000Z",
        "updated_at": "2026-12-01T11:00:00.000000Z",
        "inner_id": ident,
        "project": 3,
    }


@pytest.fixture
def photos(tiny_data: Path, tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "shop").mkdir(parents=True)
    for f in sorted((tiny_data / "img").glob("*.jpg"))[:6]:
        shutil.copyfile(f, root / "shop" / f.name)
    return root


def local(rel: str) -> str:
    return f"/data/local-files/?d={rel}"


def test_reads_the_latest_annotation_skips_cancelled_tasks_and_reports_disagreement(
    photos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    names = sorted(p.name for p in (photos / "shop").iterdir())
    tasks = [
        task(
            1,
            local(f"shop/{names[0]}"),
            [annotation({"sleeve": ["short"], "tags": ["casual", "summer"]}, "2026-12-02")],
        ),
        task(
            2,
            local(f"shop/{names[1]}"),
            [  # two people: the later correction wins; the disagreement on sleeve is reported
                annotation({"sleeve": ["short"]}, "2026-12-02T10:00:00Z", ident=2),
                annotation({"sleeve": ["long"]}, "2026-12-03T10:00:00Z", ident=3),
            ],
        ),
        task(3, local(f"shop/{names[2]}"), [annotation({}, "2026-12-02", cancelled=True)]),  # skipped
        task(4, local(f"shop/{names[3]}"), []),  # never annotated
        task(5, local(f"shop/{names[4]}"), [annotation({"tags": ["summer"]}, "2026-12-02")]),  # sleeve left blank
    ]
    export = photos / "project-3-at-2026-12-04.json"
    export.write_text(json.dumps(tasks, indent=2))
    assert infer_format(export) == "labelstudio"
    with caplog.at_level(logging.INFO, logger="fashattr"):
        reader = create_reader("labelstudio", export, {"multi_label": ["tags"]})
    assert reader.skipped == [3, 4] and reader.disagreements == {"sleeve": [2]}
    assert "5 Label Studio task(s), 3 labelled, 2 skipped or cancelled; annotators disagree on sleeve 1" in caplog.text
    schema = reader.schema()
    assert [(g.name, g.kind, g.classes) for g in schema.groups] == [
        ("sleeve", "single", ("long", "short")),
        ("tags", "multi", ("casual", "summer")),
    ]
    table = reader.read("train")
    assert table.paths == [f"shop/{names[0]}", f"shop/{names[1]}", f"shop/{names[4]}"]
    assert list(table.labels["sleeve"]) == [1, 0, UNKNOWN]  # task 2: the later "long" won
    assert table.labels["tags"].tolist() == [[1, 1], [UNKNOWN, UNKNOWN], [0, 1]]
    assert all(table.file(i).is_file() for i in range(len(table)))


def test_bad_exports_name_the_task_and_value(photos: Path, tmp_path: Path):
    name = sorted(p.name for p in (photos / "shop").iterdir())[0]

    def read(tasks: list[dict[str, Any]], **options: Any) -> Any:
        export = photos / "export.json"
        export.write_text(json.dumps(tasks))
        return create_reader("labelstudio", export, options).read("train")

    classes = {"sleeve": ["long", "short", "sleeveless"]}
    with pytest.raises(
        DatasetError, match=r"task 7: column 'sleeve': unknown class 'shrot' \(did you mean 'short'\?\)"
    ):
        read([task(7, local(f"shop/{name}"), [annotation({"sleeve": ["shrot"]}, "x")])], classes=classes)
    with pytest.raises(DatasetError, match=r"task 8: image 'shop/gone.jpg' not found under"):
        read([task(8, local("shop/gone.jpg"), [annotation({"sleeve": ["long"]}, "x")])], classes=classes)
    with pytest.raises(DatasetError, match=r"task 9: image 'https://cdn.example/a.jpg' is a URL"):
        read([task(9, "https://cdn.example/a.jpg", [annotation({"sleeve": ["long"]}, "x")])])
    with pytest.raises(DatasetError, match=r"task 10: image '/data/upload/3/ab12-a.jpg' was uploaded .*upload_root"):
        read([task(10, "/data/upload/3/ab12-a.jpg", [annotation({"sleeve": ["long"]}, "x")])])
    uploads = tmp_path / "media" / "upload"
    (uploads / "3").mkdir(parents=True)
    shutil.copyfile(photos / "shop" / name, uploads / "3" / "ab12-a.jpg")
    uploaded = [task(10, "/data/upload/3/ab12-a.jpg", [annotation({"sleeve": ["long"]}, "x")])]
    table = read(uploaded, upload_root=str(uploads), classes=classes)
    assert table.file(0) == uploads / "3" / "ab12-a.jpg"
    with pytest.raises(DatasetError, match="not a Label Studio JSON export"):
        (photos / "export.json").write_text(json.dumps({"tasks": []}))
        create_reader("labelstudio", photos / "export.json")


def test_corrected_pre_annotations_train_a_model(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    """fashattr's Label Studio tasks (export-labels' format: predictions), accepted by a person with some classes
    corrected, exported, and trained on: the corrections are the labels the model sees."""
    from fashattr.catalog.export import label_studio_task
    from fashattr.schema import ai6126_schema

    schema = ai6126_schema().to_dict()
    files = sorted((tiny_data / "img").glob("*.jpg"))[:60]
    rng = np.random.default_rng(0)
    tasks, truth = [], []
    for k, f in enumerate(files):
        guess = {g["name"]: (g["classes"][int(rng.integers(len(g["classes"])))], 0.5) for g in schema["groups"]}
        image = {"sha256": f"{k:064x}", "path": str(f), "groups": guess}
        t = label_studio_task(image, schema, "m" * 64, image_root=tiny_data)
        result = [dict(r) for r in t["predictions"][0]["result"]]
        if k % 3 == 0:  # the person corrects pattern
            result[0] = {**result[0], "value": {"choices": [schema["groups"][0]["classes"][k % 7]]}}
        truth.append(result[0]["value"]["choices"][0])
        t["annotations"] = [annotation({}, "2026-12-05", ident=k) | {"result": result}]
        t["id"] = k + 1
        tasks.append(t)
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    classes = {g["name"]: g["classes"] for g in schema["groups"]}
    reader = create_reader("labelstudio", export, {"image_root": str(tiny_data), "classes": classes})
    table = reader.read("train")
    assert [schema["groups"][0]["classes"][i] for i in table.labels["pattern"]] == truth
    over = tiny_overrides(tiny_data, cache_dir, tmp_path, name="ls", **{"train.epochs": 1})
    over = [o for o in over if not o.startswith("data.root=")]
    opts = json.dumps({"image_root": str(tiny_data), "classes": classes})
    run = fit(
        load_config(None, [*over, "data.format=labelstudio", f"data.root={export}", f"data.reader_options={opts}"])
    )
    assert (run / "best.safetensors").is_file()
