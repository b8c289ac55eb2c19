"""The wardrobe's pages for ``fashattr serve ... --db URL [--looks looks.csv]``.

``GET /v1/wardrobe[?wardrobe=NAME]``: every item as a thumbnail linking to its page. ``GET
/v1/wardrobe/item?name=ITEM[&wardrobe=NAME]``: the item's photo and attributes (unsure answers marked), its
nearest items by embedding (those at or above the redundancy threshold marked as near-duplicates), and, with
``--looks``, the items it combines with best (the compatibility scorer fitted on those looks). Plain HTML with
no script and no inline style, under the catalog's strict Content-Security-Policy; photos come from the
catalog's ``/v1/catalog/images/{sha256}``. A wardrobe, or its scorer, is read again when the catalog or the
looks file changes.
"""

from __future__ import annotations

import html
import os
from typing import Any
from urllib.parse import urlencode

import numpy as np
from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from fashattr.catalog.http import GALLERY_CSP
from fashattr.catalog.search import SearchError
from fashattr.wardrobe.items import DEFAULT_WARDROBE, WardrobeError

NEIGHBOURS = 6


def item_url(name: str, wardrobe: str) -> str:
    return "/v1/wardrobe/item?" + urlencode({"name": name, "wardrobe": wardrobe})


def wardrobe_router(url: str, looks: str | None = None) -> APIRouter:
    """The wardrobe pages over the catalog at ``url``; ``looks``: a looks CSV for the combinations."""
    router = APIRouter()
    engines: list[Any] = []
    scorers: dict[tuple[str, str, float], Any] = {}

    def engine() -> Any:
        if not engines:
            from fashattr.catalog.search import open_catalog

            engines.append(open_catalog(url))
        return engines[0]

    def load(name: str) -> Any:
        from fashattr.wardrobe.items import load_wardrobe

        return load_wardrobe(engine(), name)

    def scorer(w: Any) -> Any:
        """The scorer of ``looks`` for this wardrobe and model, fitted again when the looks file changes."""
        from fashattr.wardrobe.looks import Compatibility, read_looks

        assert looks is not None
        key = (w.name, w.model_id, os.path.getmtime(looks))
        if key not in scorers:
            scorers.clear()
            scorers[key] = Compatibility.fit(w, read_looks(looks, w))
        return scorers[key]

    @router.get("/v1/wardrobe", include_in_schema=False)
    def wardrobe_page(wardrobe: str = DEFAULT_WARDROBE) -> HTMLResponse:
        try:
            w = load(wardrobe)
        except (WardrobeError, SearchError) as e:
            return _html(_page("Wardrobe", f"<p class=error>{html.escape(str(e))}</p>"), 404)
        cells = [_figure(w, i, w.items[i]) for i in range(len(w))]
        body = f"<p>{len(w)} items, model {html.escape(w.model_id[:12])}</p><div class=grid>{''.join(cells)}</div>"
        return _html(_page(f"Wardrobe {wardrobe}", body))

    @router.get("/v1/wardrobe/item", include_in_schema=False)
    def item_page(name: str, wardrobe: str = DEFAULT_WARDROBE) -> HTMLResponse:
        from fashattr.wardrobe.redundant import REDUNDANT_THRESHOLD

        try:
            w = load(wardrobe)
            i = w.index(name)
        except (WardrobeError, SearchError) as e:
            return _html(_page("Wardrobe", f"<p class=error>{html.escape(str(e))}</p>"), 404)
        attrs = []
        for g in w.groups:
            unsure = " <em class=unsure>unsure</em>" if w.unsure[g][i] else ""
            attrs.append(
                f"<li data-group={html.escape(g, quote=True)}>{html.escape(g)}: "
                f"<b>{html.escape(w.classes[g][i])}</b> {w.probs[g][i]:.2f}{unsure}</li>"
            )
        sims = w.vectors @ w.vectors[i]
        order = [int(j) for j in np.argsort(-sims, kind="stable") if int(j) != i][:NEIGHBOURS]
        near = [
            _figure(w, j, f"{w.items[j]} {sims[j]:.3f}" + (" near-duplicate" if sims[j] >= REDUNDANT_THRESHOLD else ""))
            for j in order
        ]
        if looks is None:
            combos = "<p>No looks given: start <code>fashattr serve</code> with <code>--looks looks.csv</code>.</p>"
        else:
            from fashattr.wardrobe.looks import complete

            try:
                s = scorer(w)
                best = complete(w, s, [i], NEIGHBOURS)
                cells = "".join(_figure(w, j, f"{w.items[j]} {score:.2f}") for j, score in best)
                combos = f"<p>scorer: {html.escape(s.method)}</p><div class='grid combos'>{cells}</div>"
            except (WardrobeError, OSError) as e:
                combos = f"<p class=error>{html.escape(str(e))}</p>"
        category = f" ({html.escape(w.categories[i])})" if w.categories[i] else ""
        photo = f"<img class=photo src='/v1/catalog/images/{w.sha256[i]}' alt='{html.escape(name, quote=True)}'>"
        body = (
            f"<p><a href='/v1/wardrobe?{urlencode({'wardrobe': wardrobe})}'>all items</a></p>"
            f"<div class=item>{photo}"
            f"<ul class=attributes>{''.join(attrs)}</ul></div>"
            f"<h2>Near-duplicates</h2><div class='grid near'>{''.join(near)}</div>"
            f"<h2>Combines best with</h2>{combos}"
        )
        return _html(_page(f"{name}{category}", body))

    return router


def _figure(w: Any, j: int, caption: str) -> str:
    link = html.escape(item_url(w.items[j], w.name), quote=True)
    alt = html.escape(w.items[j], quote=True)
    return (
        f"<figure><a href='{link}'><img src='/v1/catalog/images/{w.sha256[j]}' alt='{alt}' loading=lazy></a>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status, headers={"Content-Security-Policy": GALLERY_CSP})


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        '<link rel="stylesheet" href="/v1/catalog/gallery.css"><link rel="icon" href="data:,"></head>'
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
