"""``fashattr serve``: a bundle (or a run folder, exported on the fly) behind an HTTP API and a web page.

FastAPI on uvicorn: the ASGI stack most Python model services use, with typed routes, multipart
parsing (python-multipart) and a lifespan hook to load the model off the event loop.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from fashattr.errors import FashattrError
from fashattr.serve.settings import ServeSettings, is_loopback, read_token_file

__all__ = ["ServeSettings", "create_app", "loader", "run_server"]

log = logging.getLogger("fashattr.serve")


def create_app(runtime: Any, settings: ServeSettings | None = None, on_load_failure: Any = None) -> Any:
    """See :func:`fashattr.serve.app.create_app` (imported lazily: FastAPI is an optional dependency)."""
    from fashattr.serve.app import create_app as _create_app

    return _create_app(runtime, settings, on_load_failure)


def loader(
    path: str | Path,
    backend: str = "auto",
    weights: str = "best",
    threads: int | None = None,
    decode: str | None = None,
) -> Any:
    """A function that loads ``path`` (a bundle, or a run folder exported to a temporary bundle first)
    on ``backend`` (``auto``: deploy.runtime.resolve_backend, the rule predict and tag share); the bundle is
    verified against its hashes either way.

    Raises:
        BundleError, FileNotFoundError: at once, for a folder that is neither a bundle nor a run, or a bundle
            without the backend's model file.
    """
    from fashattr.deploy.bundle import ONNX_FP32, ONNX_INT8, verify_bundle
    from fashattr.deploy.runtime import is_run_folder, resolve_backend
    from fashattr.errors import BundleError

    path = Path(path)
    is_run = is_run_folder(path)
    if is_run:
        if not (path / f"{weights}.safetensors").is_file():
            raise FileNotFoundError(f"{path / f'{weights}.safetensors'} not found; is {path} a finished run?")
    else:
        verify_bundle(path)  # a bad bundle fails here, before the server starts
    backend = resolve_backend(path, backend)
    onnx_file = {"onnx": ONNX_FP32, "onnx-int8": ONNX_INT8}.get(backend)
    if not is_run and onnx_file and not (path / onnx_file).is_file():
        fmt = "onnx-int8" if backend == "onnx-int8" else "onnx"
        raise BundleError(
            path / onnx_file,
            f"not in this bundle: serve it with --backend torch (or auto), or export with "
            f"`fashattr export RUN --format {fmt}`",
        )

    def load() -> Any:
        from fashattr.deploy.bundle import temporary_bundle
        from fashattr.deploy.runtime import Runtime

        bundle = path
        if is_run:
            bundle = temporary_bundle(path, backend, weights, prefix="fashattr-serve-bundle-")
            import atexit

            atexit.register(shutil.rmtree, bundle.parent, True)
        # decode: the default of every request that names none
        return Runtime.from_bundle(bundle, backend=backend, threads=threads, decode=decode)

    return load


def run_server(
    path: str | Path,
    settings: ServeSettings,
    backend: str = "auto",
    weights: str = "best",
    threads: int | None = None,
    log_level: str = "info",
    max_connections: int = 256,
    db: str | None = None,
    decode: str | None = None,
    looks: str | None = None,
) -> None:
    """Serve ``path`` with uvicorn until interrupted (Ctrl-C); with ``db`` (a catalog database URL) also
    the catalog's ``/v1/search`` and ``/v1/gallery`` (``fashattr.catalog.http``) and the wardrobe's pages
    (``fashattr.wardrobe.http``; ``looks``: the looks CSV they learn combinations from)."""
    import uvicorn

    if not is_loopback(settings.host) and settings.token is None:
        print(
            f"warning: serving on {settings.host}, reachable from other machines, with no bearer token: "
            "anyone who can reach this port can use the model (--token-file FILE requires one)",
            file=sys.stderr,
        )
    server: Any = None

    def stop_serving() -> None:  # a model that cannot load: no server left up answering 503 for ever
        server.should_exit = True

    app = create_app(loader(path, backend, weights, threads, decode), settings, on_load_failure=stop_serving)
    if db:
        from fashattr.catalog.http import catalog_router
        from fashattr.wardrobe.http import wardrobe_router

        app.include_router(catalog_router(db))
        app.include_router(wardrobe_router(db, looks))
        app.state.serve.catalog = True
    elif looks:
        raise ValueError("--looks needs --db: the wardrobe is in a catalog database")
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        limit_concurrency=max_connections,  # connections beyond it get 503 from uvicorn itself
        timeout_keep_alive=5,
        server_header=False,
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    server.run()
    failed = app.state.serve.failed
    if failed:
        raise ModelLoadError(f"the model could not be loaded, so the server stopped: {failed}")


class ModelLoadError(FashattrError):
    """``fashattr serve``'s model failed to load at start-up: the server stopped (``error: ...``, exit status 2)."""


def settings_from_args(args: Any) -> ServeSettings:
    """ServeSettings from ``fashattr serve``'s parsed arguments (the token file read and checked)."""
    token = None
    if args.token_file:
        token, warning = read_token_file(args.token_file)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    return ServeSettings(
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        queue_size=args.queue_size,
        max_queue_ms=args.max_queue_ms,
        timeout_s=args.timeout,
        max_body_mb=args.max_body_mb,
        max_pixels=args.max_pixels,
        max_images=args.max_images,
        token=token,
        cors_origins=tuple(args.cors_origin),
        decode_threads=args.decode_threads,
        worker_nice=args.worker_nice,
    )
