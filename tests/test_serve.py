"""fashattr serve: the HTTP API on a real uvicorn server on loopback (a tiny bundle made here), its limits
and bad input (every bad file a 4xx with its reason, the server still ready after), token, micro-batching."""

from __future__ import annotations

import concurrent.futures as cf
import io
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import untrained_run
from PIL import Image

from fashattr.deploy.bundle import write_bundle
from fashattr.deploy.runtime import Runtime
from fashattr.schema import ai6126_schema
from fashattr.serve import ServeSettings, create_app
from fashattr.serve.settings import is_loopback, read_token_file

pytest.importorskip("fastapi")
pytest.importorskip("onnxruntime")


def make_bundle(out: Path, size: int = 32) -> Path:
    """A bundle (safetensors + ONNX) of a random-init test_resnet for the ai6126 schema: no training."""
    return write_bundle(untrained_run(None, out, size=size), out / "bundle", formats=("onnx",))


class LiveServer:
    """uvicorn serving ``app`` in a thread on a free loopback port (a real socket)."""

    def __init__(self, app: Any, **uvicorn_kw: Any) -> None:
        import uvicorn

        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        kw = {"log_level": "warning", "limit_concurrency": 512, "timeout_keep_alive": 5, **uvicorn_kw}
        self.server = uvicorn.Server(uvicorn.Config(app, **kw))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the server did not become ready within 60 s")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()

    @property
    def state(self) -> Any:
        return self.app.state.serve


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Small real image files: JPEG and PNG, portrait and landscape."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    out = []
    for i, (w, h) in enumerate([(40, 60), (64, 48), (30, 30), (50, 80)]):
        arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        path = root / f"p{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(arr).save(path)
        out.append(path)
    return out


@pytest.fixture(scope="module")
def server(bundle: Path) -> Iterator[LiveServer]:
    # No model-time limit on admission (max_queue_ms=0): these tests count on every request they send
    # being answered, however slow the shared CPU; test_admission_... covers that limit.
    settings = ServeSettings(
        max_batch=8, max_wait_ms=20, queue_size=128, max_queue_ms=0, max_body_mb=2, max_pixels=1_000_000
    )
    with LiveServer(create_app(lambda: Runtime.from_bundle(bundle, "onnx"), settings)) as s:
        yield s


@pytest.fixture(scope="module")
def torch_server(bundle: Path) -> Iterator[LiveServer]:
    with LiveServer(create_app(Runtime.from_bundle(bundle, "torch"), ServeSettings())) as s:
        yield s


def post(
    server: LiveServer, files: list[tuple[str, bytes, str]], path: str = "/v1/predict", **kw: Any
) -> httpx.Response:
    parts = [("file", (name, data, ctype)) for name, data, ctype in files]
    return httpx.post(server.url + path, files=parts, timeout=30, **kw)


def jpeg(path: Path) -> tuple[str, bytes, str]:
    return (path.name, path.read_bytes(), "image/png" if path.suffix == ".png" else "image/jpeg")


def assert_still_ready(server: LiveServer, photo: Path) -> None:
    assert httpx.get(server.url + "/readyz").status_code == 200
    assert post(server, [jpeg(photo)]).status_code == 200


def test_predict_equals_the_runtime_and_fashattr_predict(server: LiveServer, bundle: Path, photos: list[Path]):
    r = post(server, [jpeg(p) for p in photos], params={"top_k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_id"] == (bundle / "hashes.json").read_text().split('"bundle_hash": "')[1][:64]
    assert body["decoding"] is None and [x["file"] for x in body["results"]] == [p.name for p in photos]
    runtime = Runtime.from_bundle(bundle, "onnx")
    expected = [rec["groups"] for rec in runtime.predict_files(photos)]
    for got, want in zip(body["results"], expected, strict=True):
        for g, v in want.items():  # same classes and probabilities; top_k=3 adds the alternatives
            assert {k: got["groups"][g][k] for k in v} == v
            assert len(got["groups"][g]["top"]) == 3 and got["groups"][g]["top"][0]["class"] == v["class"]
    raw = httpx.post(server.url + "/v1/predict", content=photos[0].read_bytes(), headers={"content-type": "image/jpeg"})
    assert raw.status_code == 200 and raw.json()["results"][0]["groups"] == expected[0]


def test_schema_health_and_metrics(server: LiveServer, photos: list[Path]):
    schema = httpx.get(server.url + "/v1/schema").json()
    assert [g["name"] for g in schema["groups"]] == list(ai6126_schema().names)
    assert schema["backend"] == "onnx" and schema["explain"] is False and schema["image_size"] == 32
    assert schema["catalog"] is False  # no --db: the page shows no gallery link
    assert schema["limits"]["max_body_bytes"] == 2 * 1024 * 1024
    assert httpx.get(server.url + "/healthz").json() == {"status": "alive"}
    post(server, [jpeg(photos[0])])
    text = httpx.get(server.url + "/metrics").text
    for name in (
        'fashattr_requests_total{route="/v1/predict",status="200"}',
        "fashattr_request_seconds_bucket",
        "fashattr_batch_size_bucket",
        "fashattr_queue_length",
        "fashattr_images_per_second",
        "fashattr_images_total",
    ):
        assert name in text, name
    assert 'route="/nope' not in text
    httpx.get(server.url + "/nope/" + "x" * 50)
    assert 'fashattr_requests_total{route="other",status="404"}' in httpx.get(server.url + "/metrics").text


def test_concurrent_requests_share_model_batches(server: LiveServer, photos: list[Path]):
    before = server.state.batcher.batches
    data = [jpeg(photos[i % 4]) for i in range(24)]
    with cf.ThreadPoolExecutor(24) as pool:
        codes = list(pool.map(lambda f: post(server, [f]).status_code, data))
    assert codes == [200] * 24
    calls = server.state.batcher.batches - before
    assert calls < 24, f"24 concurrent requests took {calls} model calls: no batching"
    assert server.state.metrics.value("fashattr_batch_size_bucket", {"le": "1.0"}) < server.state.metrics.value(
        "fashattr_batch_size_count"
    )


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's first bytes), one tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_bad_image_corpus_each_a_4xx_with_its_reason(server: LiveServer, photos: list[Path]):
    good = photos[0].read_bytes()
    ico = io.BytesIO()
    Image.new("RGB", (16, 16)).save(ico, format="ICO")
    corpus = {
        "truncated.jpg": (good[: len(good) // 2], "image/jpeg", 422, "truncated"),
        "empty.jpg": (b"", "image/jpeg", 422, "empty file"),
        "notes.jpg": (b"just some text, not a photo\n" * 20, "image/jpeg", 422, "not an image"),
        "bomb.png": (png_header(30000, 30000), "image/png", 413, "image too large"),  # Pillow's own limit
        "big.png": (png_header(2000, 1000), "image/png", 413, "2000x1000 = 2,000,000 pixels, over the limit"),
        "doc.txt": (b"hello", "text/plain", 415, "text/plain"),
        "icon.ico": (ico.getvalue(), "image/x-icon", 415, "image/x-icon"),
        "icon2.ico": (ico.getvalue(), "application/octet-stream", 415, "ICO images are not served"),
    }
    for name, (data, ctype, status, reason) in corpus.items():
        r = post(server, [(name, data, ctype)])
        assert r.status_code == status, (name, r.text)
        assert reason in r.json()["error"] and name in r.json()["error"], (name, r.text)
    r = httpx.post(server.url + "/v1/predict", content=b"hello", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "text/plain" in r.json()["error"]
    r = post(server, [jpeg(photos[0]), ("bad.jpg", b"", "image/jpeg")])  # one bad file names itself
    assert r.status_code == 422 and "bad.jpg" in r.json()["error"]
    assert server.state.batcher.in_flight == 0
    assert_still_ready(server, photos[1])


def raw_request(port: int, head: bytes, body: bytes = b"", wait: float = 5.0) -> tuple[bytes, float]:
    """Send a request's head and some body bytes on a plain socket; the response and how long it took."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(head + body)
        chunks = []
        try:
            while data := s.recv(65536):
                chunks.append(data)
                if b"\r\n\r\n" in b"".join(chunks) and b"}" in chunks[-1]:
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks), time.perf_counter() - start


def test_one_gigabyte_body_is_refused_without_reading_it(server: LiveServer, photos: list[Path]):
    head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 1073741824\r\n\r\n"
    response, seconds = raw_request(server.port, head, b"\xff" * 65536)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b"1,073,741,824 bytes is over the limit" in response and seconds < 2
    # A chunked body (no Content-Length) is counted as it streams: 413 once it passes 2 MB, before the client
    # has even ended it (no last chunk is ever sent).
    head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"100000\r\n" + b"\0" * (1 << 20) + b"\r\n"
    response, seconds = raw_request(server.port, head, chunk * 3)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b"over the limit of 2,097,152 bytes" in response and seconds < 3
    assert_still_ready(server, photos[0])


def test_path_traversal_names_are_only_echoed(server: LiveServer, photos: list[Path], tmp_path: Path):
    target = tmp_path / "evil.jpg"
    name = "../../../../../.." + str(target)
    r = post(server, [(name, photos[0].read_bytes(), "image/jpeg")])
    assert r.status_code == 200 and r.json()["results"][0]["file"] == "evil.jpg"
    assert not target.exists()
    for path in ("/static/..%2f..%2fapp.py", "/static/../serve/app.py", "/static/%2e%2e/settings.py", "/../etc/passwd"):
        assert httpx.get(server.url + path).status_code == 404, path
    r = httpx.post(
        server.url + "/v1/predict", params={"path": "/etc/passwd"}, content=b"", headers={"content-type": "image/jpeg"}
    )
    assert r.status_code == 422 and "empty file" in r.json()["error"]


def test_one_hundred_concurrent_connections(server: LiveServer, photos: list[Path]):
    data = [photos[i % 4].read_bytes() for i in range(100)]
    barrier = threading.Barrier(100)

    def one(body: bytes) -> int:
        with httpx.Client(timeout=60) as client:  # its own connection each
            barrier.wait()
            return client.post(server.url + "/v1/predict", files={"file": ("x.jpg", body, "image/jpeg")}).status_code

    with cf.ThreadPoolExecutor(100) as pool:
        codes = list(pool.map(one, data))
    assert codes.count(200) == 100, sorted(set(codes))
    assert server.state.batcher.in_flight == 0
    assert_still_ready(server, photos[0])


def test_bad_parameters(server: LiveServer, photos: list[Path]):
    f = [jpeg(photos[0])]
    assert post(server, f, params={"top_k": 9}).status_code == 422
    r = post(server, f, params={"decode": "balanced"})
    assert r.status_code == 400 and "no decoding modes" in r.json()["error"]
    r = post(server, [jpeg(photos[0])] * 17)
    assert r.status_code == 400 and "Maximum number of files" in r.json()["error"]
    assert post(server, f, path="/v1/explain").status_code == 501
    assert "--backend torch" in post(server, f, path="/v1/explain").json()["error"]


def test_token_required(bundle: Path, photos: list[Path], tmp_path: Path):
    (tmp_path / "token").write_text("s3cret-token\n")
    (tmp_path / "token").chmod(0o600)
    token, warning = read_token_file(tmp_path / "token")
    assert token == "s3cret-token" and warning is None
    app = create_app(Runtime.from_bundle(bundle, "onnx"), ServeSettings(token=token))
    with LiveServer(app) as s:
        assert post(s, [jpeg(photos[0])]).status_code == 401
        r = post(s, [jpeg(photos[0])], headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert httpx.get(s.url + "/metrics").status_code == 401
        assert post(s, [jpeg(photos[0])], headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        assert httpx.get(s.url + "/healthz").status_code == 200 and httpx.get(s.url + "/").status_code == 200
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        read_token_file(tmp_path / "empty")
    (tmp_path / "token").chmod(0o644)
    assert "readable by other users" in str(read_token_file(tmp_path / "token")[1])
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def test_cli_warns_when_binding_beyond_loopback_without_token(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    from fashattr.cli import main

    assert main(["serve", str(tmp_path / "missing"), "--host", "0.0.0.0"]) == 2  # fails before binding
    err = capsys.readouterr().err
    assert "warning: serving on 0.0.0.0" in err and "no bearer token" in err and "no such bundle folder" in err


class SlowRuntime:
    """A runtime whose model takes ``delay`` seconds per call, or fails: the limits a slow or broken model
    meets (the real runtime underneath answers otherwise)."""

    def __init__(self, runtime: Runtime, delay: float = 0.0, fail: bool = False) -> None:
        self._rt, self.delay, self.fail = runtime, delay, fail

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rt, name)

    def logits(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if not batch.any():  # the warm-up calls (all-zero batches; no photo is all black here)
            return self._rt.logits(batch)
        if self.fail:
            raise RuntimeError("model exploded: secret internal detail /srv/weights")
        time.sleep(self.delay)
        return self._rt.logits(batch)


def test_queue_full_timeout_slow_client_and_no_stack_traces(bundle: Path, photos: list[Path]):
    rt = Runtime.from_bundle(bundle, "onnx")
    settings = ServeSettings(max_batch=1, max_wait_ms=0, queue_size=2, max_queue_ms=0, timeout_s=1.0)
    with LiveServer(create_app(SlowRuntime(rt, delay=1.5), settings)) as s:
        with cf.ThreadPoolExecutor(6) as pool:
            start = time.perf_counter()
            rs = list(pool.map(lambda _: post(s, [jpeg(photos[0])]), range(6)))
        codes = sorted(r.status_code for r in rs)
        assert set(codes) <= {200, 503, 504} and 503 in codes and 504 in codes, codes  # 2 admitted at a time
        busy = [r for r in rs if r.status_code == 503]
        assert all(r.headers["retry-after"] == "1" and "server busy" in r.json()["error"] for r in busy)
        assert "did not finish within 1 s" in next(r for r in rs if r.status_code == 504).json()["error"]
        assert time.perf_counter() - start < 5
        # A slow client: headers and half the body, then nothing: 408 at the deadline.
        body = photos[0].read_bytes()
        head = (
            f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        response, seconds = raw_request(s.port, head.encode(), body[: len(body) // 2], wait=5)
        assert response.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in response
        assert 0.8 < seconds < 3
    with LiveServer(create_app(SlowRuntime(rt, fail=True), ServeSettings())) as s:
        r = post(s, [jpeg(photos[0])])
        assert r.status_code == 500 and r.json()["error"].startswith("internal server error (reference ")
        assert "exploded" not in r.text and "Traceback" not in r.text and "/srv" not in r.text
        assert httpx.get(s.url + "/readyz").status_code == 200


def test_explain_gradcam_per_group(torch_server: LiveServer, photos: list[Path]):
    r = post(torch_server, [jpeg(photos[1])], path="/v1/explain")
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(body["overlays"]) == sorted(ai6126_schema().names) and body["file"] == photos[1].name
    assert body["groups"]["sleeve"]["class"] in ai6126_schema()["sleeve"].classes
    import base64

    png = base64.b64decode(body["overlays"]["sleeve"].removeprefix("data:image/png;base64,"))
    assert Image.open(io.BytesIO(png)).size == (256, 256)
    r = post(torch_server, [jpeg(photos[1])], path="/v1/explain", params={"group": "fabric", "format": "png"})
    assert r.headers["content-type"] == "image/png" and Image.open(io.BytesIO(r.content)).size == (256, 256)
    r = post(torch_server, [jpeg(photos[1])], path="/v1/explain", params={"group": "colour"})
    assert r.status_code == 422 and "unknown group 'colour'" in r.json()["error"]
    assert httpx.get(torch_server.url + "/v1/schema").json()["explain"] is True


def test_admission_refuses_what_would_wait_longer_than_max_queue_ms():
    """Model time per image from half-full or fuller batches (exponential average, weight 0.2); a request
    is refused while the images in flight hold more model time than the limit; an idle server admits."""
    import asyncio

    from fashattr.serve.batcher import Batcher, Overloaded
    from fashattr.serve.metrics import ServeMetrics

    metrics = ServeMetrics()
    b = Batcher(lambda x: {}, max_batch=8, max_wait_ms=0, queue_size=100, metrics=metrics, max_queue_ms=100)
    b.observe(3, 1.0)  # 3 < 8 // 2: an idle server's small batch says nothing about a queue
    assert b.per_image is None and b.expected_wait() == 0
    b.observe(8, 0.08)
    assert b.per_image == pytest.approx(0.01)
    b.observe(4, 0.08)  # 0.02 s per image
    assert b.per_image == pytest.approx(0.8 * 0.01 + 0.2 * 0.02)  # 0.012
    b.admit(10)  # nothing in flight: admitted whatever it costs
    assert b.expected_wait() == pytest.approx(0.12)
    with pytest.raises(Overloaded, match=r"10 images in flight, about 120 ms of model time \(limit 100 ms\)"):
        b.admit(1)
    assert b.in_flight == 10
    b.release(2)  # 8 x 12 ms = 96 ms queued: under the limit again
    b.admit(1)
    assert b.in_flight == 9
    assert metrics.rejected.labels("queue_delay")._value.get() == 1
    b.executor.shutdown()
    asyncio.run(b.stop())


def test_model_and_decode_threads_run_below_the_event_loop_priority():
    """lowered_priority sets the nice value of the thread it runs in only, and threads that thread starts
    (as onnxruntime's pool does when its session is created there) inherit it."""
    import os

    from fashattr.serve.batcher import lowered_priority

    seen: dict[str, int] = {}

    def child() -> None:
        seen["child"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def worker() -> None:
        lowered_priority(7)()
        seen["worker"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        t = threading.Thread(target=child)
        t.start()
        t.join()

    main = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"worker": max(7, main), "child": max(7, main)}  # never raised above the process's own
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main  # the loop's thread is untouched
