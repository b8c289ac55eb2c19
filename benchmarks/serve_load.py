"""Load on `fashattr serve` (loopback): an open-loop client at fixed arrival rates with real photos.

For micro-batching on and off (``--max-batch 16 --max-wait-ms 5`` vs ``--max-batch 1 --max-wait-ms 0``),
rates rise step by step until saturation (p99 over 500 ms or any error): p50/p95/p99 latency, throughput
and errors per rate, and the highest rate held with p99 < 500 ms. Then, with batching on: overload at 2x
that rate (503s and how fast they come back), recovery after the overload (seconds until every request is
answered 200 under 500 ms again), and 10,000 requests with the server's RSS before and after (leak check).

Open loop: request i is sent at ``start + i / rate`` whatever happened to earlier ones, and its latency is
counted from that scheduled time, so a server that falls behind shows it (no coordinated omission).

    python benchmarks/serve_load.py runs/bundles/cpu_resnet18 [--step-s 6] [--leak-requests 10000]
    python benchmarks/serve_load.py runs/bundles/cpu_best --backend torch   # the backend that explains (Grad-CAM)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_line

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("FASHATTR_DATA") or ROOT.parent / "shared" / "data" / "FashionDataset")
RESULTS = ROOT / "benchmarks" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Server:
    def __init__(
        self,
        bundle: str,
        batching: bool,
        queue_size: int = 64,
        threads: int = 0,
        max_connections: int = 1024,
        backend: str = "onnx",
        extra: tuple[str, ...] = (),
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        batch = ["--max-batch", "16", "--max-wait-ms", "5"] if batching else ["--max-batch", "1", "--max-wait-ms", "0"]
        cmd = [
            sys.executable,
            "-m",
            "fashattr",
            "serve",
            bundle,
            "--port",
            str(self.port),
            "--queue-size",
            str(queue_size),
            "--max-connections",
            str(max_connections),
            "--threads",
            str(threads),
            "--backend",
            backend,
            *batch,
            *extra,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server not ready")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def multipart(img: bytes, port: int) -> bytes:
    """A whole HTTP/1.1 request (headers and multipart body) posting ``img``, encoded once up front."""
    boundary = b"fashattrbench0123456789"
    body = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + img + b"\r\n--" + boundary + b"--\r\n"
    )
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary.decode()}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def send_one(port: int, request: bytes, timeout: float) -> int:
    """Send one pre-encoded request on a fresh connection; the response's status (0: no answer)."""
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            return int(status_line.split()[1])
    except (OSError, TimeoutError, asyncio.IncompleteReadError, IndexError, ValueError):
        return 0
    finally:
        if writer is not None:
            writer.close()


async def open_loop(url: str, images: list[bytes], rate: float, seconds: float, offset: int = 0) -> list[dict]:
    """Send ``rate`` requests/s for ``seconds``; per request: scheduled time, latency, status.

    A raw asyncio client (requests encoded up front, one connection each, only the status line and
    Content-Length parsed) costs the shared CPU far less per request than a full HTTP client, so at
    high rates the latency measured is the server's, not the client's own backlog.
    """
    port = int(url.rsplit(":", 1)[1])
    requests = [multipart(img, port) for img in images]
    out: list[dict] = []
    start = time.perf_counter()

    async def one(i: int, at: float) -> None:
        status = await send_one(port, requests[(offset + i) % len(requests)], 30.0)
        out.append({"t": at, "latency": time.perf_counter() - start - at, "status": status})

    tasks = []
    n = int(rate * seconds)
    for i in range(n):
        at = i / rate
        delay = start + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, at)))
    await asyncio.gather(*tasks)
    return sorted(out, key=lambda r: r["t"])


def model_only(bundle: str, threads: int, backend: str = "onnx", seconds: float = 4.0) -> dict[str, float]:
    """Images/s of the bundle's model alone on random batches of 1 and of 16 (the server's --threads): the
    most micro-batching can gain is what the model itself gains from batches (decoding is per image)."""
    from batch_gain import rate  # the same measurement, per backend and thread count

    from fashattr.deploy.runtime import Runtime

    rt = Runtime.from_bundle(bundle, backend=backend, threads=threads or None)
    return {f"batch{n}": round(rate(rt, n, seconds), 1) for n in (1, 16)}


def summarise(rate: float, seconds: float, recs: list[dict]) -> dict[str, Any]:
    ok = [r["latency"] * 1000 for r in recs if r["status"] == 200]
    lat = np.array(ok) if ok else np.array([np.inf])
    span = max([r["t"] + r["latency"] for r in recs] + [seconds, 1e-9])
    return {
        "rate": rate,
        "requests": len(recs),
        "ok": len(ok),
        "errors": len(recs) - len(ok),
        "error_codes": sorted({r["status"] for r in recs if r["status"] != 200}),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "throughput": round(len(ok) / span, 1),
    }


def ladder(url: str, images: list[bytes], rates: list[float], step_s: float) -> tuple[list[dict], float]:
    rows, best = [], 0.0
    for rate in rates:
        row = summarise(rate, step_s, asyncio.run(open_loop(url, images, rate, step_s)))
        rows.append(row)
        print(json.dumps(row), flush=True)
        if row["errors"] or row["p99_ms"] >= 500:
            break
        best = rate
    return rows, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--rates", default="10,20,40,60,80,100,120,140,170,200,240,280")
    ap.add_argument("--step-s", type=float, default=6.0)
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--leak-requests", type=int, default=10_000)
    ap.add_argument("--out", default=str(RESULTS / "serve_load"))
    ap.add_argument("--threads", type=int, default=0, help="the server's model threads (0: the backend's default)")
    ap.add_argument("--backend", default="onnx", choices=("onnx", "onnx-int8", "torch"), help="the server's --backend")
    # uvicorn answers 503 itself past this many open connections, before parsing a request: the cheap
    # refusal that keeps an overloaded server's backlog (and so its recovery time) short.
    ap.add_argument("--max-connections", type=int, default=1024, help="the server's --max-connections")
    args = ap.parse_args()
    names = sorted((REAL / "img").iterdir())[: args.images]
    images = [p.read_bytes() for p in names]
    rates = [float(r) for r in args.rates.split(",")]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "bundle": args.bundle,
        "images": len(images),
        "step_s": args.step_s,
        "cpu": machine_line(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": load_before,
        "server_threads": args.threads,
        "backend": args.backend,
        "max_connections": args.max_connections,
    }

    result["model_only"] = model_only(args.bundle, args.threads, args.backend)
    print("model only", result["model_only"], flush=True)
    server = {"threads": args.threads, "max_connections": args.max_connections, "backend": args.backend}
    with Server(args.bundle, batching=False, **server) as s:
        print("micro-batching off", flush=True)
        result["off"], result["off_best"] = ladder(s.url, images, rates, args.step_s)
    with Server(args.bundle, batching=True, **server) as s:
        print("micro-batching on", flush=True)
        result["on"], result["on_best"] = ladder(s.url, images, rates, args.step_s)
        best = result["on_best"] or rates[0]
        # Overload at 2x the highest held rate, then half that rate: when is every answer 200 under 500 ms?
        over = asyncio.run(open_loop(s.url, images, 2 * best, args.step_s))
        busy = [r["latency"] * 1000 for r in over if r["status"] == 503]
        end_over = max(r["t"] + r["latency"] for r in over)
        after = asyncio.run(open_loop(s.url, images, best / 2, 8.0))
        bad_t = [r["t"] for r in after if r["status"] != 200 or r["latency"] >= 0.5]
        # after's clock starts when the overload's last answer came back (the client starts it then)
        result["overload"] = {
            "rate": 2 * best,
            "summary": summarise(2 * best, args.step_s, over),
            "n_503": len(busy),
            "p50_503_ms": round(float(np.percentile(busy, 50)), 1) if busy else None,
            "p99_503_ms": round(float(np.percentile(busy, 99)), 1) if busy else None,
            "last_answer_after_s": round(end_over - args.step_s, 2),
            "recovery_s": round(max(bad_t) + 1 / (best / 2), 2) if bad_t else 0.0,
            "after": summarise(best / 2, 8.0, after),
        }
        print(json.dumps(result["overload"]), flush=True)
        # Leak check: 10,000 requests at 80% of the held rate; RSS after the first 1,000 and at the end.
        leak_rate = max(10.0, 0.8 * best)
        first = min(1000, args.leak_requests)
        asyncio.run(open_loop(s.url, images, leak_rate, first / leak_rate))
        rss0 = rss_mb(s.proc.pid)
        rest = asyncio.run(open_loop(s.url, images, leak_rate, (args.leak_requests - first) / leak_rate, first))
        rss1 = rss_mb(s.proc.pid)
        result["leak"] = {
            "requests": args.leak_requests,
            "rate": leak_rate,
            "rss_mb_after_1000": round(rss0, 1),
            "rss_mb_end": round(rss1, 1),
            "growth_pct": round(100 * (rss1 / rss0 - 1), 2),
            "summary_rest": summarise(leak_rate, 0, rest),
        }
        print(json.dumps(result["leak"]), flush=True)
    result["ratio_on_off"] = round(result["on_best"] / result["off_best"], 2) if result["off_best"] else None
    result["loadavg_after"] = os.getloadavg()
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    write_markdown(result, out.with_suffix(".md"))
    plot(result, out.with_suffix(".png"))
    print(f"written {out}.json/.md/.png in {result['wall_s']} s")


def write_markdown(r: dict[str, Any], path: Path) -> None:
    host = r.get("cpu", f"{r['cpu_count']} cores")  # runs before the machine line was recorded
    lines = [
        f"# fashattr serve under load ({Path(r['bundle']).name}, {r.get('backend', 'onnx')} backend, loopback, {host})",
        "",
        "Open-loop client (raw asyncio sockets, one connection per request) on the same machine, "
        f"{r['images']} real FashionDataset photos, "
        f"{r['step_s']:g} s per rate. Load average before: {', '.join(f'{x:.2f}' for x in r['loadavg_before'])}; "
        f"after: {', '.join(f'{x:.2f}' for x in r['loadavg_after'])}. Whole run {r['wall_s']} s. "
        f"Server: --threads {r.get('server_threads', 0)} (0: the backend's default), "
        f"--max-connections {r.get('max_connections', 1024)}.",
        "",
        "| batching | offered req/s | answered/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in ("off", "on"):
        for row in r[mode]:
            err = f"{row['errors']} {row['error_codes']}" if row["errors"] else "0"
            lines.append(
                f"| {mode} | {row['rate']:g} | {row['throughput']:g} | {row['p50_ms']:g} | "
                f"{row['p95_ms']:g} | {row['p99_ms']:g} | {err} |"
            )
    o, leak = r["overload"], r["leak"]
    lines += [
        "",
        f"- Highest rate held with p99 < 500 ms and no errors: **{r['on_best']:g} req/s with micro-batching, "
        f"{r['off_best']:g} without** (ratio {r['ratio_on_off']}). The model alone, same threads: "
        f"{r['model_only']['batch1']:g} img/s in batches of 1, {r['model_only']['batch16']:g} in batches of 16 "
        f"(ratio {r['model_only']['batch16'] / r['model_only']['batch1']:.2f}).",
        f"- Overload at {o['rate']:g} req/s (2x): {o['n_503']} of {o['summary']['requests']} answered 503, "
        f"p50 {o['p50_503_ms']} ms, p99 {o['p99_503_ms']} ms for the 503s; 200s p99 {o['summary']['p99_ms']} ms.",
        f"- Recovery: at {o['after']['rate']:g} req/s right after the overload, every request answered 200 under "
        f"500 ms after {o['recovery_s']} s (p99 {o['after']['p99_ms']} ms over those 8 s).",
        f"- {leak['requests']:,} requests at {leak['rate']:g} req/s: RSS {leak['rss_mb_after_1000']} MB after the "
        f"first 1,000, {leak['rss_mb_end']} MB at the end ({leak['growth_pct']:+.2f}%); the rest's p99 "
        f"{leak['summary_rest']['p99_ms']} ms, {leak['summary_rest']['errors']} errors.",
    ]
    path.write_text("\n".join(lines) + "\n")


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, color in (("off", "tab:red"), ("on", "tab:blue")):
        rows = r[mode]
        x = [row["rate"] for row in rows]
        a.plot(x, [row["p99_ms"] for row in rows], "o-", color=color, label=f"p99, batching {mode}")
        a.plot(x, [row["p50_ms"] for row in rows], "x--", color=color, label=f"p50, batching {mode}")
        b.plot(x, [row["throughput"] for row in rows], "o-", color=color, label=f"batching {mode}")
    a.axhline(500, color="gray", lw=0.8)
    a.set(xlabel="offered requests/s", ylabel="latency ms", yscale="log", title="latency (open loop)")
    b.plot([0, max(row["rate"] for row in r["on"])], [0, max(row["rate"] for row in r["on"])], ":", color="gray")
    b.set(xlabel="offered requests/s", ylabel="answered 200/s", title="throughput")
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
