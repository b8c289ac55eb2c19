"""The catalog's routes for ``fashattr serve ... --db URL``: ``/v1/search``, the images it returns, and ``/gallery``.

``GET /v1/search?q=sleeve=long_sleeve&q=pattern=floral[&min_prob=0.6][&model=ID][&limit=50]``: the matches
of ``catalog.search.search`` as JSON (400 with the reason, listing the choices, for an unknown group or
class). ``GET /v1/catalog/images/{sha256}``: the image of a content, read from a path the catalog recorded
for it and only while that file still has that content (a request never names a file). ``GET /v1/gallery``:
an HTML page with one drop-down per group (the model's schema) and the matches as a grid of thumbnails; no
script and no inline style (its own strict Content-Security-Policy). All of it is under ``/v1/``, so a
service started with a bearer token guards the catalog too (a plain browser then cannot open the gallery).

The database calls block, so every route is a plain ``def`` (FastAPI runs them in its thread pool).
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse, Response

from fashattr.catalog.search import SearchError, resolve_model, search

MAX_LIMIT = 500
GALLERY_CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
STYLE = (
    "body{font-family:sans-serif;margin:1em}label{margin-right:1em}.grid{display:flex;flex-wrap:wrap;gap:8px}"
    "figure{margin:0;width:160px;font-size:11px}img{width:160px;height:160px;object-fit:contain;"
    "background:#f4f4f4}.error{color:#a00}.item{display:flex;gap:1em}img.photo{width:320px;height:320px}"
    ".unsure{color:#a60}"
)


def catalog_router(url: str) -> APIRouter:
    """The catalog routes over the database at ``url`` (opened at the first request).

    Raises:
        SearchError: (at the first request) a SQLite file that does not exist.
    """
    router = APIRouter()
    engines: list[Any] = []

    def engine() -> Any:
        if not engines:
            from fashattr.catalog.search import open_catalog

            engines.append(open_catalog(url))
        return engines[0]

    def run_search(q: list[str], min_prob: float, model: str | None, limit: int) -> dict[str, Any]:
        if not 1 <= limit <= MAX_LIMIT:
            raise HTTPException(400, f"limit {limit} must be between 1 and {MAX_LIMIT}")
        try:
            res = search(engine(), q, min_prob, model, limit)
        except SearchError as e:
            raise HTTPException(400, str(e)) from None
        return {
            "model_id": res.model_id,
            "conditions": [{"group": c.group, "class": c.class_name} for c in res.conditions],
            "matches": [
                {"sha256": m.sha256, "path": m.path, "probs": m.probs, "image": f"/v1/catalog/images/{m.sha256}"}
                for m in res.matches
            ],
        }

    @router.get("/v1/search")
    def search_route(
        q: list[str] = Query(..., description="GROUP=CLASS, repeated: every one must hold"),  # noqa: B008
        min_prob: float = 0.0,
        model: str | None = None,
        limit: int = 50,
    ) -> dict[str, Any]:
        return run_search(q, min_prob, model, limit)

    @router.get("/v1/catalog/images/{sha256}")
    def image(sha256: str) -> FileResponse:
        import os

        import sqlalchemy as sa

        from fashattr.catalog.db import image_paths
        from fashattr.portable.bundle import file_sha256

        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise HTTPException(400, "expected a sha256 in lower-case hex")
        with engine().connect() as conn:
            q = sa.select(image_paths.c.path).where(image_paths.c.sha256 == sha256)
            paths = list(conn.execute(q.order_by(image_paths.c.last_seen.desc())).scalars())
        for path in paths:
            if os.path.isfile(path) and file_sha256(path) == sha256:  # the file still holds that content
                return FileResponse(path, headers={"Cache-Control": "max-age=3600"})
        raise HTTPException(404, f"no file with content {sha256[:12]} in the catalog any more")

    @router.get("/v1/catalog/gallery.css", include_in_schema=False)
    def css() -> Response:
        return Response(STYLE, media_type="text/css")

    @router.get("/v1/gallery", include_in_schema=False)
    def gallery(
        q: list[str] = Query(default=[]),  # noqa: B008
        min_prob: float = 0.0,
        model: str | None = None,
        limit: int = 60,
    ) -> HTMLResponse:
        try:
            with engine().connect() as conn:
                model_id, schema = resolve_model(conn, model)
        except SearchError as e:
            return _html(_page("", f"<p class=error>{html.escape(str(e))}</p>"), 400)
        chosen = dict(c.partition("=")[::2] for c in q if c.count("=") == 1 and c.split("=")[1])
        form = _form(schema, chosen, min_prob, model)
        if not chosen:
            return _html(_page(form, "<p>Choose one or more classes.</p>"))
        try:
            res = run_search([f"{g}={c}" for g, c in chosen.items()], min_prob, model_id, limit)
        except HTTPException as e:
            return _html(_page(form, f"<p class=error>{html.escape(str(e.detail))}</p>"), 400)
        cells = []
        for m in res["matches"]:
            probs = " ".join(f"{g} {p:.2f}" for g, p in m["probs"].items())
            name = html.escape((m["path"] or "").rsplit("/", 1)[-1])
            cells.append(
                f'<figure><img src="{m["image"]}" alt="{name}" loading="lazy">'
                f"<figcaption>{name}<br>{html.escape(probs)}</figcaption></figure>"
            )
        body = (
            f"<p>{len(cells)} match(es), model {html.escape(model_id[:12])}</p><div class=grid>{''.join(cells)}</div>"
        )
        return _html(_page(form, body))

    return router


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status, headers={"Content-Security-Policy": GALLERY_CSP})


def _form(schema: dict[str, Any], chosen: dict[str, str], min_prob: float, model: str | None) -> str:
    parts = ['<form method="get" action="/v1/gallery">']
    for g in schema["groups"]:
        name = html.escape(g["name"])
        options = ['<option value="">any</option>']
        for c in g["classes"]:
            sel = " selected" if chosen.get(g["name"]) == c else ""
            value = html.escape(f"{g['name']}={c}", quote=True)
            options.append(f'<option value="{value}"{sel}>{html.escape(c)}</option>')
        parts.append(f'<label>{name} <select name="q">{"".join(options)}</select></label>')
    parts.append(
        '<label>min prob <input name="min_prob" type="number" step="0.05" min="0" max="1" '
        f'value="{min_prob:g}"></label>'
    )
    if model:
        parts.append(f'<input type="hidden" name="model" value="{html.escape(model, quote=True)}">')
    parts.append('<button type="submit">Search</button></form>')
    return "".join(parts)


def _page(form: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>fashattr catalog</title>"
        '<link rel="stylesheet" href="/v1/catalog/gallery.css"><link rel="icon" href="data:,"></head>'
        f"<body><h1>Catalog</h1>{form}{body}</body></html>"
    )


def gallery_url(conditions: dict[str, str], **params: Any) -> str:
    """The gallery's URL for ``{group: class}`` conditions (and ``min_prob``, ``model``, ``limit``)."""
    query = [("q", f"{g}={c}") for g, c in conditions.items()] + [(k, str(v)) for k, v in params.items()]
    return "/v1/gallery?" + urlencode(query)
