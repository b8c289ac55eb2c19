"""The team's loop through a real Label Studio server on loopback (.venv-labelstudio, tools/label-studio-server.sh):
a tiny model tags photos into a catalog, ``fashattr export-labels`` writes pre-annotations and the labeling config,
the server gets a project with that config and the tasks through its API, a person's work is done through the
same API (accept, correct, skip, disagree, label an uploaded photo), the project is exported, and fashattr trains
on the export."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import tiny_overrides
from pg_cluster import free_port
from serving import external_server, require_tool

from fashattr.cli import main
from fashattr.config import load_config
from fashattr.data.formats import create_reader, infer_format
from fashattr.deploy.bundle import write_bundle
from fashattr.engine.trainer import fit

ROOT = Path(__file__).resolve().parent.parent
SERVER = Path(os.environ.get("FASHATTR_LABEL_STUDIO", ROOT / ".venv-labelstudio" / "bin" / "label-studio"))
TOKEN = "f" * 8 + "a5b1" * 8  # the API token the test gives its user (Label Studio's legacy token: 40 hex digits)


class LabelStudio:
    """A Label Studio server: its URL, the folders it serves, an authenticated API client."""

    def __init__(self, url: str, document_root: Path, data_dir: Path) -> None:
        self.url, self.document_root, self.data_dir = url, document_root, data_dir
        self.api = httpx.Client(base_url=url, headers={"Authorization": f"Token {TOKEN}"}, timeout=60)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.api.request(method, path, **kwargs)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text[:2000]}"
        return r.json() if r.content and r.headers.get("content-type", "").startswith("application/json") else r


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Generator[LabelStudio, None, None]:
    """A real Label Studio on a free loopback port: its own data folder (SQLite), one user with an API token,
    local-file serving from a document root the test fills with photos."""
    require_tool(SERVER, "Label Studio", "tools/label-studio-server.sh")
    root = tmp_path_factory.mktemp("label_studio")
    documents, data = root / "documents", root / "data"
    documents.mkdir()
    port = free_port()
    env = os.environ | {
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",  # tasks may name photos on this machine
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(documents),
        "LATEST_VERSION_CHECK": "false",  # no call to PyPI at start
        "COLLECT_ANALYTICS": "false",
    }
    cmd = [str(SERVER), "start", "--no-browser", "--data-dir", str(data), "--internal-host", "127.0.0.1"]
    cmd += ["--port", str(port), "--username", "annotator@fashattr.test", "--password", "fashattr-test"]
    cmd += ["--user-token", TOKEN, "--enable-legacy-api-token", "--log-level", "WARNING"]
    url = f"http://127.0.0.1:{port}"
    # First start: Django's migrations on a new SQLite database.
    with external_server(cmd, url + "/health", root / "server.log", ready_s=240, cwd=root, env=env):
        yield LabelStudio(url, documents, data)


def choices(result: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {r["from_name"]: r["value"]["choices"] for r in result}


def region(group: str, classes: list[str]) -> dict[str, Any]:
    return {"from_name": group, "to_name": "image", "type": "choices", "value": {"choices": classes}}


def test_pre_annotations_corrected_in_label_studio_train_a_model(
    label_studio: LabelStudio, tiny_data: Path, cache_dir: Path, tmp_path: Path
):
    ls = label_studio
    # A tiny model tags a shop's photos (under Label Studio's document root) into a catalog.
    run = fit(load_config(None, tiny_overrides(tiny_data, cache_dir, tmp_path, name="ls0", **{"train.epochs": 1})))
    bundle = write_bundle(run, tmp_path / "bundle")
    model_id = json.loads((bundle / "hashes.json").read_text())["bundle_hash"]
    shop = ls.document_root / "shop"
    shop.mkdir()
    files = sorted((tiny_data / "img").glob("*.jpg"))
    for f in files[:16]:
        shutil.copyfile(f, shop / f.name)
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    assert main(["tag", str(bundle), str(shop), "--db", url, "--backend", "torch", "--no-progress"]) == 0
    tasks_file = tmp_path / "review.json"
    args = ["export-labels", "--db", url, "--format", "label-studio", "--out", str(tasks_file)]
    assert main([*args, "--image-root", str(ls.document_root)]) == 0
    config = (tmp_path / "review.label_config.xml").read_text()
    schema = json.loads((bundle / "config.json").read_text())["schema"]
    groups = {g["name"]: g["classes"] for g in schema["groups"]}

    # The project: fashattr's labeling config, the photos' folder as local storage (so the annotator sees them),
    # the pre-annotations imported through the API.
    project = ls.call("POST", "/api/projects", json={"title": "fashattr review", "label_config": config})
    pid = project["id"]
    assert project["parsed_label_config"].keys() == groups.keys()  # Label Studio read one Choices per group
    storage = {"project": pid, "path": str(shop), "title": "shop", "use_blob_urls": True}
    ls.call("POST", "/api/storages/localfiles", json=storage)
    imported = ls.call("POST", f"/api/projects/{pid}/import", json=json.loads(tasks_file.read_text()))
    assert imported["task_count"] == 16 and imported["prediction_count"] == 16
    # and one photo a person uploads in the browser, which Label Studio keeps in its media folder.
    extra = files[16]
    with extra.open("rb") as f:
        uploaded = ls.call("POST", f"/api/projects/{pid}/import", files={"file": (extra.name, f, "image/jpeg")})
    assert uploaded["task_count"] == 1

    listing = ls.call("GET", "/api/tasks", params={"project": pid, "page_size": 100, "fields": "all"})
    tasks = sorted(listing["tasks"], key=lambda t: t["id"])
    assert len(tasks) == 17
    served = tasks[0]["data"]["image"]
    assert served.startswith("/data/local-files/?d=shop/")
    image = ls.call("GET", served)  # the annotator's browser gets the very file
    assert image.content == (ls.document_root / served.split("?d=")[1]).read_bytes()

    # A person's work: accept most pre-annotations, correct pattern on every third, skip one photo, and a second
    # annotator who disagrees on sleeve on another; then label the uploaded photo from scratch.
    expected: dict[str, dict[str, str]] = {}  # path -> group -> the class a person settled on
    cancelled, disputed = tasks[5]["id"], tasks[7]["id"]
    for k, t in enumerate(tasks[:16]):
        (prediction,) = t["predictions"]
        assert prediction["model_version"] == model_id and 0 < prediction["score"] <= 1
        answer = choices(prediction["result"])
        if k % 3 == 0:
            old = answer["pattern"][0]
            answer["pattern"] = [next(c for c in groups["pattern"] if c != old)]
        result = [region(g, c) for g, c in answer.items()]
        body = {"result": result, "was_cancelled": t["id"] == cancelled, "ground_truth": False}
        ls.call("POST", f"/api/tasks/{t['id']}/annotations", json=body)
        if t["id"] == disputed:
            time.sleep(0.05)  # the second annotation is the later one
            other = next(c for c in groups["sleeve"] if c != answer["sleeve"][0])
            second = [*[r for r in result if r["from_name"] != "sleeve"], region("sleeve", [other])]
            ls.call("POST", f"/api/tasks/{t['id']}/annotations", json={"result": second})
            answer["sleeve"] = [other]
        if t["id"] != cancelled:
            expected[t["data"]["image"].split("?d=")[1]] = {g: c[0] for g, c in answer.items()}
    new = tasks[16]
    assert new["data"]["image"].startswith("/data/upload/")
    fresh = {g: c[len(c) // 2] for g, c in groups.items()}
    ls.call("POST", f"/api/tasks/{new['id']}/annotations", json={"result": [region(g, [c]) for g, c in fresh.items()]})

    # The project's export, read back: the people's labels, the skipped photo left out, the dispute reported.
    export = tmp_path / "project-export.json"
    export.write_bytes(ls.call("GET", f"/api/projects/{pid}/export", params={"exportType": "JSON"}).content)
    assert infer_format(export) == "labelstudio"
    options = {"image_root": str(ls.document_root), "upload_root": str(ls.data_dir / "media" / "upload")}
    options["classes"] = groups
    reader = create_reader("labelstudio", export, options)
    assert reader.skipped == [cancelled] and reader.disagreements == {"sleeve": [disputed]}
    table = reader.read("train")
    upload_path = next(p for p in table.paths if p not in expected)
    expected[upload_path] = fresh
    assert table.file(table.paths.index(upload_path)).read_bytes() == extra.read_bytes()
    read = {p: {g: groups[g][int(table.labels[g][i])] for g in groups} for i, p in enumerate(table.paths)}
    assert read == expected

    # Training on the export: the corrected labels are what the model learns from.
    over = [o for o in tiny_overrides(tiny_data, cache_dir, tmp_path, name="ls1") if not o.startswith("data.root=")]
    over += ["data.format=labelstudio", f"data.root={export}", f"data.reader_options={json.dumps(options)}"]
    retrained = fit(load_config(None, [*over, "train.epochs=1"]))
    assert (retrained / "best.safetensors").is_file()
