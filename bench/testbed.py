"""
What Comet costs on the real testbed (issue 7), through the HTTP API of a
C{twistd -n comet} child configured for it (QEMU host, OpenZFS storage VMs):

1. B{Reactor responsiveness during a volume download}: C{GET /cluster}
   back to back while nothing runs (the baseline), then while the guest image
   is downloaded into a new volume (HTTP body streamed through ssh into
   C{dd} on the storage server), then while a cluster of 4 VMs starts.
2. B{Cluster start wall time, 1 VM against 4 VMs}: C{POST /cluster/:c/start}
   until its task is finished (each VM placed, its disk exported over iSCSI,
   its domain defined and started), then a forced stop, C{--rounds} times.

    .venv/bin/python bench/testbed.py [--rounds 3] [--json bench/results/testbed.json]

A client process of its own (this one, with the standard library's HTTP
client) measures the daemon.  Skips, saying so, when the testbed is not up.
Everything it makes carries a random token and is deleted at the end.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.integration._daemon import comet_config  # noqa: E402
from tests.test_service import TWISTD, _twistd_env, free_port  # noqa: E402

STATE = os.environ.get("COMET_TESTBED_STATE", os.path.join(ROOT, "testbed", "state"))


def summary(latencies: list[float]) -> dict:
    s = sorted(latencies)
    if not s:
        return {"count": 0}
    pct = lambda p: round(s[min(len(s) - 1, int(p * len(s)))] * 1000, 2)  # noqa: E731
    return {"count": len(s), "median_ms": pct(0.5), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
            "max_ms": pct(1.0)}


class Client:
    """The daemon's API: JSON in and out, a Bearer token."""

    def __init__(self, base: str, token: str):
        self.base = base
        self.token = token

    def request(self, method: str, path: str, body=None) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                raw = response.read()
                return response.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, (json.loads(raw) if raw else None)

    def ok(self, method: str, path: str, body=None, codes=(200, 201, 202, 204)):
        code, answer = self.request(method, path, body)
        if code not in codes:
            raise RuntimeError(f"{method} {path}: {code} {answer}")
        return answer

    def task_done(self, href: str) -> dict | None:
        task = self.ok("GET", href)
        return None if task["status"] == "running" else task

    def wait(self, answer: dict, timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            task = self.task_done(answer["href"])
            if task is not None:
                if task["status"] != "finished":
                    raise RuntimeError(f"task failed: {task}")
                return task
            if time.monotonic() > deadline:
                raise RuntimeError(f"task still running after {timeout} s: {answer}")
            time.sleep(0.2)


def probe_while(client: Client, task_href: str | None, count: int = 200) -> tuple[list, float]:
    """
    C{GET /cluster} back to back: C{count} of them (no task), or until the
    task C{task_href} ends (checked every 10 probes).  Returns the latencies
    and the wall time until the task ended.
    """
    latencies = []
    started = time.monotonic()
    while True:
        t0 = time.perf_counter()
        client.ok("GET", "/cluster")
        latencies.append(time.perf_counter() - t0)
        if task_href is None:
            if len(latencies) >= count:
                return latencies, time.monotonic() - started
        elif len(latencies) % 10 == 0:
            task = client.task_done(task_href)
            if task is not None:
                if task["status"] != "finished":
                    raise RuntimeError(f"task failed: {task}")
                return latencies, time.monotonic() - started


def serve_file(path: str) -> tuple[str, http.server.HTTPServer]:
    """Serve C{path}'s directory on a loopback port (a thread); its URL."""
    directory = os.path.dirname(path)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=directory, **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/{os.path.basename(path)}", server


def measure(stack: dict, rounds: int) -> dict:
    token = secrets.token_hex(3)
    directory = tempfile.mkdtemp(prefix="comet-bench-tb-")
    control = tempfile.mkdtemp(prefix="cb-", dir="/tmp")   # short ssh ControlPath
    port = free_port()
    config = comet_config(stack, directory, port, control)
    made = subprocess.run([sys.executable, "-m", "comet.admin", "--config", config, "bootstrap"],
                          env=_twistd_env(), cwd=directory, capture_output=True, check=True)
    client = Client(f"http://127.0.0.1:{port}", made.stdout.decode().splitlines()[2])
    log = os.path.join(directory, "twistd.log")
    daemon = subprocess.Popen(TWISTD + ["-n", "--pidfile=", "--logfile", log, "comet",
                                        "--config", config], env=_twistd_env(), cwd=directory)
    image_url, image_server = serve_file(stack["guest"]["image"])
    result: dict = {"token": token}
    clusters: list[str] = []
    base = template = pool = None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client.ok("GET", "/cluster")
                break
            except (OSError, RuntimeError):
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise RuntimeError("the daemon did not listen; see " + log)
                time.sleep(0.2)
        need = 2 * stack["guest"]["image_size"]
        pools = [client.ok("GET", f"/storagepools/{s['storagepool']}") for s in stack["servers"]]
        pool = next(p["name"] for p in pools if p["state"] == "active" and p["available"] >= need)

        result["loadavg"] = open("/proc/loadavg").read().split()[:3]
        idle, _ = probe_while(client, None)
        # The same download twice: alone (its wall time), then under the probes.
        base = f"bench-{token}-alone"
        t0 = time.monotonic()
        client.wait(client.ok("POST", f"/storagepools/{pool}/storagevolumes",
                              {"name": base, "url": image_url}))
        alone_s = time.monotonic() - t0
        client.ok("DELETE", f"/storagepools/{pool}/storagevolumes/{base}")
        base = f"bench-{token}-base"
        answer = client.ok("POST", f"/storagepools/{pool}/storagevolumes",
                           {"name": base, "url": image_url})
        download, download_s = probe_while(client, answer["href"])
        result["cluster_probe"] = {"idle": summary(idle), "download": summary(download),
                                   "download_s": round(download_s, 2),
                                   "download_alone_s": round(alone_s, 2),
                                   "image_bytes": os.path.getsize(stack["guest"]["image"])}

        template = f"bench{token}"
        client.ok("POST", "/templates", {"name": template, "memory": 128, "cpus": 1,
                                         "disk": {"pool": pool, "volume": base}})
        for size in (1, 4):
            cluster = f"bench-{token}-{size}"
            client.ok("POST", "/cluster", {"name": cluster})
            clusters.append(cluster)
            for _ in range(size):
                client.ok("POST", f"/cluster/{cluster}/vms", {"template": template})
        starts: dict[int, list[float]] = {1: [], 4: []}
        stops: dict[int, list[float]] = {1: [], 4: []}
        for _ in range(rounds):
            for size, cluster in zip((1, 4), clusters):
                t0 = time.monotonic()
                client.wait(client.ok("POST", f"/cluster/{cluster}/start", {}))
                starts[size].append(time.monotonic() - t0)
                t0 = time.monotonic()
                client.wait(client.ok("POST", f"/cluster/{cluster}/stop",
                                      {"timeout": 0, "force": True}))
                stops[size].append(time.monotonic() - t0)
        # Once more, 4 VMs, under the probes.
        t0 = time.monotonic()
        during_start, _ = probe_while(
            client, client.ok("POST", f"/cluster/{clusters[1]}/start", {})["href"])
        result["start4_probed_s"] = round(time.monotonic() - t0, 2)
        client.wait(client.ok("POST", f"/cluster/{clusters[1]}/stop", {"timeout": 0, "force": True}))
        result["cluster_probe"]["start4"] = summary(during_start)
        result["cluster_start"] = {
            str(size): {"start_s": [round(s, 2) for s in starts[size]],
                        "start_median_s": round(sorted(starts[size])[len(starts[size]) // 2], 2),
                        "stop_median_s": round(sorted(stops[size])[len(stops[size]) // 2], 2)}
            for size in (1, 4)}
        result["cluster_start"]["ratio_4_vs_1"] = round(
            result["cluster_start"]["4"]["start_median_s"]
            / result["cluster_start"]["1"]["start_median_s"], 2)
    finally:
        for cluster in clusters:
            client.request("DELETE", f"/cluster/{cluster}", {"force": True})
        if template:
            client.request("DELETE", f"/templates/{template}")
        if base:
            client.request("DELETE", f"/storagepools/{pool}/storagevolumes/{base}")
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        image_server.shutdown()
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(control, ignore_errors=True)
    return result


def report(result: dict, path: str) -> None:
    probe = result["cluster_probe"]
    lines = ["GET /cluster back to back (ms):",
             f"{'while':<34} {'count':>6} {'median':>8} {'p95':>8} {'p99':>8} {'max':>8}"]
    for key, label in (("idle", "nothing runs (baseline)"),
                       ("download", f"a {probe['image_bytes'] // 2**20} MiB volume download"),
                       ("start4", "a cluster of 4 VMs starts")):
        r = probe[key]
        lines.append(f"{label:<34} {r['count']:>6} {r['median_ms']:>8} {r['p95_ms']:>8}"
                     f" {r['p99_ms']:>8} {r['max_ms']:>8}")
    lines.append(f"download wall time {probe['download_s']} s under the probes,"
                 f" {probe['download_alone_s']} s alone; 4 VMs' start under the probes"
                 f" {result['start4_probed_s']} s; p99 busy/idle:"
                 f" download {round(probe['download']['p99_ms'] / probe['idle']['p99_ms'], 2)}x,"
                 f" start {round(probe['start4']['p99_ms'] / probe['idle']['p99_ms'], 2)}x"
                 " (target: p99 <= 50 ms)")
    start = result["cluster_start"]
    lines += ["", "cluster start (POST .../start until its task is finished), seconds:",
              f"{'VMs':>4} {'median':>8} {'each round':<28} {'stop median':>12}"]
    for size in ("1", "4"):
        r = start[size]
        lines.append(f"{size:>4} {r['start_median_s']:>8} {str(r['start_s']):<28}"
                     f" {r['stop_median_s']:>12}")
    lines.append(f"4 VMs / 1 VM: {start['ratio_4_vs_1']}x (4.0x = one after the other);"
                 f" load average at the start {' '.join(result['loadavg'])}")
    result["table"] = "\n".join(lines)
    print(result["table"])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nJSON: {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "testbed.json"))
    args = parser.parse_args()
    try:
        with open(os.path.join(STATE, "stack.json")) as f:
            stack = json.load(f)
    except OSError:
        print(f"skipped: the testbed is not up (no {STATE}/stack.json; testbed/stack up)")
        return 0
    check = subprocess.run([os.path.join(ROOT, "testbed", "stack"), "status"],
                           capture_output=True)
    if check.returncode != 0:
        print("skipped: the testbed is not up (testbed/stack status failed)")
        return 0
    report(measure(stack, args.rounds), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
