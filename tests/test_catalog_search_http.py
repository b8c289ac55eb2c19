"""The catalog routes (/v1/search, /v1/catalog/images, /v1/gallery) on a real uvicorn server on loopback,
and the gallery in a real chromium."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pg_cluster import free_port
from test_catalog_search import bundle, catalog, common_pair, expected_matches, photos  # noqa: F401

from fashattr.portable.bundle import file_sha256


@pytest.fixture(scope="module")
def server(catalog: dict[str, Any]) -> Iterator[str]:  # noqa: F811
    import uvicorn
    from fastapi import FastAPI

    from fashattr.catalog.http import catalog_router

    app = FastAPI()
    app.include_router(catalog_router(catalog["url"]))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


# The server loads its model in the background while these requests run; on a loaded 2-core machine (the test
# suite's two workers and another job) an answer can take longer than httpx's default 5 s. Behaviour, not speed.
SLOW = 60.0


def test_search_route_and_images(server: str, catalog: dict[str, Any]):  # noqa: F811
    conds = common_pair(catalog["truth"])
    q = [("q", f"{g}={c}") for g, c in conds.items()]
    r = httpx.get(f"{server}/v1/search", params=[*q, ("limit", "100")])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_id"] == catalog["model_id"]
    assert [m["sha256"] for m in body["matches"]] == expected_matches(catalog["truth"], conds)
    first = body["matches"][0]
    img = httpx.get(server + first["image"])
    assert img.status_code == 200 and img.content == Path(first["path"]).read_bytes()
    bad = httpx.get(f"{server}/v1/search", params={"q": "sleeve=long"})
    assert bad.status_code == 400 and "unknown class 'long' of group 'sleeve'; classes:" in bad.json()["detail"]
    assert httpx.get(f"{server}/v1/catalog/images/{'0' * 64}").status_code == 404
    assert httpx.get(f"{server}/v1/catalog/images/..%2F..%2Fetc%2Fpasswd").status_code in (400, 404)
    assert httpx.get(f"{server}/v1/search", params=[*q, ("limit", "0")]).status_code == 400


def test_image_route_refuses_a_file_whose_content_changed(server: str, catalog: dict[str, Any], photos: Path):  # noqa: F811
    victim = photos / "a" / "00039.jpg"
    sha = file_sha256(victim)
    original = victim.read_bytes()
    try:
        victim.write_bytes(original[:-10] + b"0123456789")
        assert httpx.get(f"{server}/v1/catalog/images/{sha}").status_code == 404
    finally:
        victim.write_bytes(original)
    assert httpx.get(f"{server}/v1/catalog/images/{sha}").status_code == 200


def test_gallery_in_a_browser(server: str, catalog: dict[str, Any]):  # noqa: F811
    from browser import open_page

    names = list(catalog["runtime"].schema.names)
    pair = common_pair(catalog["truth"])
    conds = {g: pair[g] for g in names if g in pair}  # the form sends the groups in schema order
    want = expected_matches(catalog["truth"], conds)[:60]
    with open_page() as (page, log):
        page.goto(f"{server}/v1/gallery")
        assert page.locator("select").count() == 6
        for g, c in conds.items():
            page.locator("select").nth(names.index(g)).select_option(f"{g}={c}")
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        imgs = page.locator("figure img")
        assert imgs.count() == len(want)
        srcs = [imgs.nth(i).get_attribute("src") for i in range(imgs.count())]
        assert srcs == [f"/v1/catalog/images/{s}" for s in want]
        widths = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth)")
        assert all(w and w > 0 for w in widths), widths  # every thumbnail loaded
        assert page.locator("body").evaluate("b => getComputedStyle(b).fontFamily").startswith("sans-serif")
        assert log.problems() == []  # no CSP violation, no failed request


def test_fashattr_serve_with_db_adds_the_catalog_routes(catalog: dict[str, Any], bundle: Path):  # noqa: F811
    import subprocess
    import sys

    port = free_port()
    cmd = [sys.executable, "-m", "fashattr", "serve", str(bundle), "--backend", "torch", "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--db", catalog["url"]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "fashattr serve did not start"
            time.sleep(0.2)
        conds = common_pair(catalog["truth"])
        r = httpx.get(f"{base}/v1/search", params=[("q", f"{g}={c}") for g, c in conds.items()], timeout=SLOW)
        assert r.status_code == 200, r.text
        assert [m["sha256"] for m in r.json()["matches"]] == expected_matches(catalog["truth"], conds)
        bad = httpx.get(f"{base}/v1/search", params={"q": "fit=baggy"}, timeout=SLOW)
        assert bad.status_code == 400 and bad.json()["error"].startswith("unknown class 'baggy' of group 'fit'")
        page = httpx.get(f"{base}/v1/gallery", timeout=SLOW)
        assert page.status_code == 200 and page.text.count("<select") == 6
        # the model's page links the gallery when the catalog is mounted
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the model did not load"
            time.sleep(0.2)
        assert httpx.get(f"{base}/v1/schema", timeout=SLOW).json()["catalog"] is True
        assert '<a id="gallery" href="/v1/gallery" hidden>' in httpx.get(f"{base}/", timeout=SLOW).text
    finally:
        proc.terminate()
        proc.wait(20)
