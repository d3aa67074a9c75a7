"""
A small closed-loop HTTP/1.1 load client (asyncio, keep-alive), run by
C{bench/api.py} as a separate process so that its CPU is not the daemon's.

    python bench/_load.py load PORT CONCURRENCY SECONDS PATH [PATH ...]
    python bench/_load.py busy PORT PROBE_PATH POST_PATH [POST_PATH ...]

C{load}: C{CONCURRENCY} connections, each sending GET requests back to back
(cycling through the paths) for C{SECONDS}; prints JSON with every latency
summary and the requests per second.

C{busy}: one connection sends C{GET PROBE_PATH} back to back while every
C{POST_PATH} is sent at once, each on its own connection; prints the probe's
latencies while the POSTs ran and the POSTs' statuses.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from _report import summary

#: The API token the daemon's admin got (bench/api.py passes it on).
TOKEN = os.environ.get("COMET_TOKEN", "")


class Connection:
    def __init__(self, port: int):
        self.port = port

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def request(self, method: str, path: str) -> tuple[int, bytes]:
        body = b"{}" if method == "POST" else b""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
        )
        if method in ("POST", "PUT", "DELETE"):
            head += "Content-Type: application/json\r\n"   # 415 without, a body or not
        if TOKEN:
            head += f"Authorization: Bearer {TOKEN}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed by the server")
        status = int(status_line.split()[1])
        length, chunked = None, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readline()
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readline()
            data = b"".join(parts)
        else:
            data = await self.reader.readexactly(length or 0)
        return status, data

    def close(self):
        self.writer.close()


async def load(port: int, concurrency: int, seconds: float, paths: list[str]) -> dict:
    latencies: list[float] = []
    errors = {"count": 0, "statuses": {}}
    connections = [Connection(port) for _ in range(concurrency)]
    for c in connections:
        await c.open()
    start = time.perf_counter()
    deadline = start + seconds

    async def worker(i: int, c: Connection):
        n = i
        while time.perf_counter() < deadline:
            path = paths[n % len(paths)]
            n += concurrency
            t0 = time.perf_counter()
            status, _ = await c.request("GET", path)
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors["count"] += 1
                errors["statuses"][status] = errors["statuses"].get(status, 0) + 1

    await asyncio.gather(*(worker(i, c) for i, c in enumerate(connections)))
    elapsed = time.perf_counter() - start
    for c in connections:
        c.close()
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "requests": len(latencies),
        "rps": round(len(latencies) / elapsed, 1),
        "errors": errors,
        **summary(latencies),
    }


async def busy(port: int, probe_path: str, post_paths: list[str]) -> dict:
    probe = Connection(port)
    await probe.open()
    # An idle baseline of the probe, just before (200 requests or 3 s, at least 20).
    idle: list[float] = []
    end = time.perf_counter() + 3
    while len(idle) < 20 or (len(idle) < 200 and time.perf_counter() < end):
        t0 = time.perf_counter()
        await probe.request("GET", probe_path)
        idle.append(time.perf_counter() - t0)

    posters = [Connection(port) for _ in post_paths]
    for c in posters:
        await c.open()
    done = asyncio.Event()
    statuses: dict[int, int] = {}
    post_latencies: list[float] = []

    async def post(c: Connection, path: str):
        t0 = time.perf_counter()
        status, _ = await c.request("POST", path)
        post_latencies.append(time.perf_counter() - t0)
        statuses[status] = statuses.get(status, 0) + 1

    loaded: list[float] = []

    async def probe_loop():
        while not done.is_set():
            t0 = time.perf_counter()
            await probe.request("GET", probe_path)
            loaded.append(time.perf_counter() - t0)

    start = time.perf_counter()
    prober = asyncio.ensure_future(probe_loop())
    await asyncio.gather(*(post(c, p) for c, p in zip(posters, post_paths)))
    wall = time.perf_counter() - start
    done.set()
    await prober
    for c in [probe, *posters]:
        c.close()
    return {
        "posts": len(post_paths),
        "post_statuses": statuses,
        "posts_wall_s": round(wall, 3),
        "post_latency": summary(post_latencies),
        "probe_idle": summary(idle),
        "probe_busy": summary(loaded),
    }


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "load":
        port, concurrency, seconds, *paths = argv[1:]
        result = asyncio.run(load(int(port), int(concurrency), float(seconds), paths))
    elif mode == "busy":
        port, probe_path, *post_paths = argv[1:]
        result = asyncio.run(busy(int(port), probe_path, post_paths))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
