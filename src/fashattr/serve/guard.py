"""The ASGI middleware every request passes: bearer token, body limit and deadline, metrics, headers.

A plain ASGI middleware rather than FastAPI dependencies, because two limits must act before any
route code runs or while the body streams in: a Content-Length over the limit is answered 413
without reading a byte of the body, and a chunked body is counted as it arrives (413 the moment it
passes the limit) and must arrive before the request's deadline (408 for a slow client).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import HTTPException

from fashattr.serve.metrics import ServeMetrics
from fashattr.serve.settings import ServeSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PROTECTED = ("/v1/", "/metrics")  # what the bearer token guards; the page, /healthz and /readyz stay open
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


async def send_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    data = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": data})


class Guard:
    """Token check, body limit, request deadline, metrics and security headers around ``app``.

    Sets ``scope["fashattr_deadline"]`` (event-loop time) for the routes' own waits.
    """

    def __init__(self, app: Any, settings: ServeSettings, metrics: ServeMetrics, routes: Callable[[], set[str]]):
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.routes = routes
        self.token = settings.token.encode() if settings.token else None

    def _route(self, path: str) -> str:
        # Label by known route only: arbitrary paths must not grow the metrics without bound.
        return path if path in self.routes() else "other"

    def _authorized(self, scope: Scope) -> bool:
        if self.token is None or not scope["path"].startswith(PROTECTED):
            return True
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        deadline = loop.time() + self.settings.timeout_s
        scope["fashattr_deadline"] = deadline
        route = self._route(scope["path"])
        status = [500]

        async def tracked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        try:
            if not self._authorized(scope):
                self.metrics.rejected.labels("unauthorized").inc()
                challenge = [(b"www-authenticate", b'Bearer realm="fashattr"')]
                await send_json(tracked_send, 401, {"error": "missing or wrong bearer token"}, challenge)
                return
            limit = self.settings.max_body_bytes
            length = dict(scope.get("headers", [])).get(b"content-length")
            if length is not None:
                try:
                    declared = int(length)
                except ValueError:
                    await send_json(tracked_send, 400, {"error": f"bad Content-Length {length!r}"}, [])
                    return
                if declared > limit:
                    self.metrics.rejected.labels("body_too_large").inc()
                    why = f"request body of {declared:,} bytes is over the limit of {limit:,} bytes"
                    await send_json(tracked_send, 413, {"error": why}, [(b"connection", b"close")])
                    return
            await self.app(scope, self._limited(receive, limit, deadline), tracked_send)
        finally:
            self.metrics.observe_request(route, status[0], time.perf_counter() - start)

    def _limited(self, receive: Receive, limit: int, deadline: float) -> Receive:
        """``receive`` that counts body bytes (413 past ``limit``) and gives up at ``deadline`` (408)."""
        received = 0
        done = False
        loop = asyncio.get_running_loop()

        async def limited_receive() -> Message:
            nonlocal received, done
            if done:  # the body is in: later receives wait for a disconnect, without a deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                self.metrics.rejected.labels("slow_body").inc()
                raise HTTPException(
                    408, f"the request body did not arrive within {self.settings.timeout_s:g} s"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if received > limit:
                    self.metrics.rejected.labels("body_too_large").inc()
                    raise HTTPException(413, f"request body over the limit of {limit:,} bytes")
            return message

        return limited_receive
