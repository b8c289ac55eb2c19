"""HTTP routes of ``fashattr serve``: predict, explain, schema, health, readiness, metrics and the page.

``create_app(runtime, settings)`` builds the FastAPI app around a :class:`~fashattr.deploy.runtime.Runtime`
(or a function that loads one: the server then answers /healthz at once and /readyz with 503 until the
model is loaded and warmed up). No route loads a model, reads a path the client names or fetches a URL;
errors come back as ``{"error": "..."}`` JSON, never as a stack trace (those go to the server log).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.resources
import io
import json
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from fashattr.serve.batcher import Batcher, Logits, Overloaded, lowered_priority
from fashattr.serve.guard import Guard
from fashattr.serve.metrics import ServeMetrics
from fashattr.serve.settings import ServeSettings
from fashattr.serve.uploads import Upload, decode_upload, read_uploads

log = logging.getLogger("fashattr.serve")
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
EXPLAIN_SIZE = 256  # overlays are drawn on the photo letterboxed at this size (the model sees image_size)


def backend_name(runtime: Any) -> str:
    """``torch``, ``onnx`` or ``onnx-int8``: what the runtime's backend is."""
    from fashattr.deploy.runtime import TorchBackend

    if isinstance(runtime.backend, TorchBackend):
        return "torch"
    path = getattr(runtime.backend, "path", None)
    return "onnx-int8" if path is not None and "int8" in Path(path).name else "onnx"


def model_id(runtime: Any) -> str | None:
    """The bundle hash (model id) of a runtime loaded from a bundle; None for a run folder."""
    source = getattr(runtime, "source", None)
    hashes = Path(source) / "hashes.json" if source else None
    if hashes is None or not hashes.is_file():
        return None
    return str(json.loads(hashes.read_text(encoding="utf-8"))["bundle_hash"])


class ServeState:
    """What the routes share: the runtime (once loaded), the batcher, metrics and a private temp folder."""

    def __init__(
        self, runtime: Any, settings: ServeSettings, on_load_failure: Callable[[], None] | None = None
    ) -> None:
        self.loader: Callable[[], Any] | None = runtime if callable(runtime) else None
        self.on_load_failure = on_load_failure
        self.runtime: Any = None if callable(runtime) else runtime
        self.settings = settings
        self.metrics = ServeMetrics()
        self.batcher = Batcher(
            self._logits,
            settings.max_batch,
            settings.max_wait_ms,
            settings.queue_size,
            self.metrics,
            settings.worker_nice,
            settings.max_queue_ms,
        )
        self.ready = False
        self.catalog = False  # set when the catalog routes are mounted (fashattr serve --db)
        self.failed: str | None = None
        self.model_id: str | None = None
        self.backend = ""
        self.decode_pool: Any = None
        shm = Path("/dev/shm")  # memory-backed where there is one: uploads never touch a disk
        self.tmp_dir = Path(tempfile.mkdtemp(prefix="fashattr-serve-", dir=shm if shm.is_dir() else None))

    def _logits(self, batch: np.ndarray) -> Logits:
        return dict(self.runtime.logits(batch))

    async def start(self) -> None:
        import concurrent.futures as cf

        self.decode_pool = cf.ThreadPoolExecutor(
            self.settings.decode_threads, "fashattr-decode", initializer=lowered_priority(self.settings.worker_nice)
        )
        self.batcher.start()
        try:
            if self.runtime is None:
                assert self.loader is not None
                self.runtime = await self.batcher.call(self.loader)
            self.model_id = model_id(self.runtime)
            self.backend = backend_name(self.runtime)
            s = self.runtime.image_size
            for n in sorted({1, self.settings.max_batch}):  # first calls allocate; do them before traffic
                await self.batcher.call(self._logits, np.zeros((n, s, s, 3), np.uint8))
            # A second full batch, timed: admission's first estimate of model time per image.
            full = np.zeros((self.settings.max_batch, s, s, 3), np.uint8)
            start = time.perf_counter()
            await self.batcher.call(self._logits, full)
            self.batcher.observe(len(full), time.perf_counter() - start)
            self.ready = True
            log.info("model %s ready (%s backend)", (self.model_id or "(run folder)")[:16], self.backend)
        except Exception as e:
            self.failed = f"{type(e).__name__}: {e}"
            log.exception("the model could not be loaded")
            if self.on_load_failure is not None:
                self.on_load_failure()

    async def stop(self) -> None:
        await self.batcher.stop()
        if self.decode_pool is not None:
            self.decode_pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def require_ready(self) -> None:
        if not self.ready:
            why = f"the model failed to load: {self.failed}" if self.failed else "the model is loading"
            raise HTTPException(503, why, headers={"Retry-After": "5"})

    async def decode(self, uploads: list[Upload], display: int = 0) -> list[tuple[np.ndarray, np.ndarray | None]]:
        loop = asyncio.get_running_loop()
        jobs = [
            loop.run_in_executor(self.decode_pool, decode_upload, u, self.runtime, self.settings, self.tmp_dir, display)
            for u in uploads
        ]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for r in results:  # the first bad image answers for the request (each is named in its message)
            if isinstance(r, BaseException):
                raise r
        return results  # type: ignore[return-value]

    def decode_mode(self, mode: str | None) -> str | None:
        """The decoding a request asked for (None: the bundle's default), checked against the bundle's modes."""
        rt = self.runtime
        modes = list(getattr(rt, "decode_modes", None) or [])
        if mode is not None and not modes and mode != "none":
            raise HTTPException(400, f"decode={mode!r}: this model's bundle carries no decoding modes")
        check = getattr(rt, "check_decode", None)
        if check is None:
            return None
        try:
            return check(mode)
        except ValueError as e:
            raise HTTPException(400, f"decode={mode!r}: {e}") from None

    def labels(self, logits: list[Logits], top_k: int, mode: str | None) -> list[dict[str, Any]]:
        stacked = {g: np.concatenate([z[g] for z in logits]) for g in logits[0]}
        if mode is None:
            return list(self.runtime.decode(stacked, top_k))
        return list(self.runtime.decode(stacked, top_k, decode=mode))

    def remaining(self, request: Request) -> float:
        deadline = request.scope.get("fashattr_deadline")
        now = asyncio.get_running_loop().time()
        return self.settings.timeout_s if deadline is None else max(0.0, deadline - now)


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def create_app(
    runtime: Any, settings: ServeSettings | None = None, on_load_failure: Callable[[], None] | None = None
) -> FastAPI:
    """The service around ``runtime`` (a Runtime, or a no-argument function returning one).

    Args:
        runtime: the model; a loader function defers loading to start-up, off the event loop.
        settings: limits and batching (defaults: :class:`ServeSettings`).
        on_load_failure: called when the loader fails (``fashattr serve`` stops the server); without it the
            app stays up and /readyz says why it is not ready.

    Returns:
        A FastAPI app; run it with uvicorn (``fashattr serve`` does). Other features add routes to it.
    """
    settings = settings or ServeSettings()
    state = ServeState(runtime, settings, on_load_failure)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        starting = asyncio.get_running_loop().create_task(state.start())
        try:
            yield
        finally:
            starting.cancel()
            await state.stop()

    app = FastAPI(title="fashattr", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serve = state
    static = importlib.resources.files("fashattr.serve") / "static"
    page = {name: (static / name).read_bytes() for name in ("index.html", *STATIC)}

    def known_routes() -> set[str]:
        return {getattr(r, "path", "") for r in app.router.routes}

    app.add_middleware(Guard, settings=settings, metrics=state.metrics, routes=known_routes)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Filename"],
        )

    @app.exception_handler(StarletteHTTPException)  # FastAPI's HTTPException and Starlette's own (form parsing)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return JSONResponse({"error": "invalid request: " + "; ".join(parts)}, 422)

    @app.exception_handler(Overloaded)
    async def overloaded(_request: Request, exc: Overloaded) -> JSONResponse:
        body = {"error": f"server busy ({exc}); retry shortly"}
        return JSONResponse(body, 503, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:12]
        log.error("error %s on %s %s", ref, request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": f"internal server error (reference {ref} in the server log)"}, 500)

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return Response(
            page["index.html"], media_type="text/html; charset=utf-8", headers={"Content-Security-Policy": PAGE_CSP}
        )

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> Response:
        if name not in STATIC:  # a fixed list: no path from the request ever reaches the file system
            raise HTTPException(404, "not found")
        return Response(page[name], media_type=STATIC[name])

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if state.ready:
            return JSONResponse({"status": "ready", "model_id": state.model_id, "backend": state.backend})
        status = "failed" if state.failed else "loading"
        return JSONResponse({"status": status, "error": state.failed}, 503, headers={"Retry-After": "5"})

    @app.get("/metrics")
    async def metrics() -> Response:
        body, ctype = state.metrics.render()
        return Response(body, media_type=ctype)

    @app.get("/v1/schema")
    async def schema() -> dict[str, Any]:
        state.require_ready()
        rt = state.runtime
        return {
            "model_id": state.model_id,
            "backend": state.backend,
            "image_size": rt.image_size,
            "groups": rt.config["schema"]["groups"],
            "decode_modes": list(getattr(rt, "decode_modes", None) or []),
            "default_decode": getattr(rt, "default_decode", None),
            "explain": state.backend == "torch",
            "catalog": state.catalog,  # `fashattr serve --db`: the page links the gallery
            "limits": {
                "max_body_bytes": settings.max_body_bytes,
                "max_pixels": settings.max_pixels,
                "max_images": settings.max_images,
                "max_top_k": settings.max_top_k,
                "formats": list(settings.formats),
                "timeout_s": settings.timeout_s,
            },
        }

    def check_top_k(top_k: int) -> None:
        if not 1 <= top_k <= settings.max_top_k:
            raise HTTPException(422, f"top_k={top_k}: choose 1 to {settings.max_top_k}")

    @app.post("/v1/predict")
    async def predict(request: Request, top_k: int = 1, decode: str | None = None) -> dict[str, Any]:
        """Labels per image for one or more uploaded photos (multipart or one raw image body)."""
        state.require_ready()
        check_top_k(top_k)
        mode = state.decode_mode(decode)
        state.batcher.admit(1)  # before the body is read: an overloaded server refuses cheaply
        held = 1
        try:
            uploads = await read_uploads(request, settings)
            if len(uploads) > 1:
                state.batcher.admit(len(uploads) - 1)
                held = len(uploads)
            decoded = await state.decode(uploads)
            jobs = [asyncio.ensure_future(state.batcher.submit(px)) for px, _ in decoded]
            try:
                logits = await asyncio.wait_for(asyncio.gather(*jobs), state.remaining(request))
            except TimeoutError:
                state.metrics.rejected.labels("timeout").inc()
                raise HTTPException(504, f"the prediction did not finish within {settings.timeout_s:g} s") from None
        finally:
            state.batcher.release(held)
        labels = state.labels(logits, top_k, mode)
        results = [{"file": u.name, **rec} for u, rec in zip(uploads, labels, strict=True)]
        return {"model_id": state.model_id, "decoding": mode, "results": results}

    @app.post("/v1/explain", response_model=None)
    async def explain(
        request: Request, group: str | None = None, format: str = "json", top_k: int = 3
    ) -> Response | dict[str, Any]:
        """Grad-CAM overlay per group for one photo (torch backend): base64 PNGs in JSON, or one raw PNG."""
        state.require_ready()
        if state.backend != "torch":
            raise HTTPException(
                501, f"Grad-CAM needs gradients: serve with --backend torch (this server runs {state.backend})"
            )
        check_top_k(top_k)
        groups = [g["name"] for g in state.runtime.config["schema"]["groups"]]
        if group is not None and group not in groups:
            raise HTTPException(422, f"unknown group {group!r}; choose from {groups}")
        if format not in ("json", "png") or (format == "png" and group is None):
            raise HTTPException(422, "format must be 'json', or 'png' together with group=NAME")
        state.batcher.admit(1)
        try:
            uploads = await read_uploads(request, settings)
            if len(uploads) != 1:
                raise HTTPException(422, f"explain takes one image; {len(uploads)} were sent")
            ((pixels, big),) = await state.decode(uploads, display=max(EXPLAIN_SIZE, state.runtime.image_size))
            job = state.batcher.call(_explain, state.runtime, pixels, groups if group is None else [group], big)
            try:
                overlays, logits = await asyncio.wait_for(job, state.remaining(request))
            except TimeoutError:
                raise HTTPException(504, f"Grad-CAM did not finish within {settings.timeout_s:g} s") from None
        finally:
            state.batcher.release(1)
        if format == "png":
            assert group is not None
            return Response(overlays[group], media_type="image/png")
        labels = state.labels([logits], top_k, state.decode_mode(None))[0]
        b64 = {g: "data:image/png;base64," + base64.b64encode(png).decode() for g, png in overlays.items()}
        return {"model_id": state.model_id, "file": uploads[0].name, **labels, "overlays": b64}

    return app


def _explain(runtime: Any, pixels: np.ndarray, groups: list[str], big: np.ndarray) -> tuple[dict[str, bytes], Logits]:
    """Grad-CAM maps drawn over ``big`` as PNGs per group, and the logits (on the model thread)."""
    from fashattr.report.gradcam import gradcam_pixels, overlay

    maps = gradcam_pixels(runtime.backend.model, runtime.prep.mean, runtime.prep.std, pixels[None])
    logits = runtime.logits(pixels[None])
    return {g: _png(overlay(big, maps[g][0])) for g in groups}, logits


__all__ = ["ServeState", "create_app"]
