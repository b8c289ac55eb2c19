"""Typed settings of the HTTP service: where it listens, how it batches, and every limit it enforces."""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

# What Pillow calls the formats the service accepts (sniffed from the bytes, never from a file name).
DEFAULT_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
# Content types a client may declare for an image; anything else declared (text/plain, application/pdf)
# is refused with 415 before decoding. application/octet-stream means "sniff it".
IMAGE_CONTENT_TYPES = (
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/bmp",
    "image/gif",
    "image/tiff",
    "application/octet-stream",
)


@dataclass(frozen=True)
class ServeSettings:
    """Options of ``fashattr serve`` (the defaults suit a 2-core CPU and a ~100 img/s model).

    Attributes:
        host: interface to bind; loopback unless told otherwise.
        port: TCP port.
        max_batch: most images one model call takes.
        max_wait_ms: how long the batcher waits for more images after the first one arrives
            (0 with ``max_batch=1`` switches micro-batching off).
        queue_size: most images admitted at once (queued, decoding or in the model); beyond it
            requests get 503 with ``Retry-After`` before their body is read.
        max_queue_ms: beyond ``queue_size``, requests are refused (503) while the images in flight
            would keep the model busy longer than this (model time per image measured as it serves;
            0: off), so admitted requests are answered in time on a slower or busier machine.
        timeout_s: per request: the body must arrive and the prediction finish within it
            (a slow upload gets 408, a prediction that has not finished gets 504).
        max_body_mb: request body limit (413), checked on Content-Length and counted while streaming.
        max_pixels: width x height limit per image, read from the header before decoding (413).
        max_images: images per request.
        max_top_k: largest ``top_k`` a request may ask for.
        formats: Pillow format names accepted (415 otherwise).
        token: bearer token the /v1 routes and /metrics require (None: no token).
        cors_origins: origins allowed cross-site (none: CORS off).
        decode_threads: threads that decode uploaded images (Pillow releases the GIL).
        worker_nice: nice value of the model and decode threads (Linux; 0 keeps the default): below
            the event loop's priority, so a saturated CPU still leaves the loop free to refuse at once.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 16
    max_wait_ms: float = 5.0
    queue_size: int = 64
    max_queue_ms: float = 250.0
    timeout_s: float = 10.0
    max_body_mb: float = 20.0
    max_pixels: int = 40_000_000
    max_images: int = 16
    max_top_k: int = 5
    formats: tuple[str, ...] = DEFAULT_FORMATS
    token: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    decode_threads: int = 2
    worker_nice: int = 10

    def __post_init__(self) -> None:
        checks = {
            "max_batch": self.max_batch >= 1,
            "max_wait_ms": self.max_wait_ms >= 0,
            "queue_size": self.queue_size >= 1,
            "max_queue_ms": self.max_queue_ms >= 0,
            "timeout_s": self.timeout_s > 0,
            "max_body_mb": self.max_body_mb > 0,
            "max_pixels": self.max_pixels >= 1,
            "max_images": self.max_images >= 1,
            "max_top_k": self.max_top_k >= 1,
            "decode_threads": self.decode_threads >= 1,
            "worker_nice": 0 <= self.worker_nice <= 19,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"serve settings out of range: {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)}")
        if self.token is not None and not self.token:
            raise ValueError("an empty bearer token would let anyone in; give a non-empty token or none")
        unknown = sorted(set(self.formats) - set(DEFAULT_FORMATS))
        if unknown:
            raise ValueError(f"image formats {unknown} are not served; choose from {list(DEFAULT_FORMATS)}")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token_file(path: str | Path) -> tuple[str, str | None]:
    """The bearer token in ``path`` (first line, stripped), and a warning when others can read the file.

    Raises:
        ValueError: the file is missing, unreadable or empty.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"token file {path}: cannot read it: {e}") from None
    token = lines[0].strip() if lines else ""
    if not token:
        raise ValueError(f"token file {path} is empty; write the token on its first line")
    warning = None
    mode = path.stat().st_mode
    if os.name == "posix" and mode & (stat.S_IRGRP | stat.S_IROTH):
        warning = f"token file {path} is readable by other users (mode {stat.filemode(mode)}); chmod 600 it"
    return token, warning
