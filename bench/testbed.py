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
3. B{Both kinds of heavy work at once}: C{GET /cluster} while the download
   runs I{and} 50 VM starts (C{POST .../start}, all at once) run, in a second
   daemon whose compute hosts are 4 libvirt test-driver nodes (50 QEMU guests
   do not fit these 2 cores) and whose storage is the testbed's OpenZFS.

    .venv/bin/python bench/testbed.py [--rounds 3] [--json bench/results/testbed.json]
                                      [--only-mixed] [--stall-ms MS]

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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from _client import Client  # noqa: E402
from _report import save, summary  # noqa: E402
from tests.integration._daemon import comet_config  # noqa: E402
from tests.virt._nodes import make_node_xml  # noqa: E402
from tests.test_service import TWISTD, _twistd_env, free_port  # noqa: E402

LOAD = os.path.join(ROOT, "bench", "_load.py")
STATE = os.environ.get("COMET_TESTBED_STATE", os.path.join(ROOT, "testbed", "state"))


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


class Daemon:
    """A C{twistd -n comet} child for the testbed, on a temporary directory."""

    #: C{[debug] stall_ms} for every daemon (C{--stall-ms}); 0: off.
    stall_ms = 0.0
    #: Where the stalls they logged are kept (their directories are removed).
    stall_log = os.path.join(ROOT, "bench", "results", "testbed-stalls.log")

    def __init__(self, stack: dict, hosts: list[dict] | None = None):
        self.directory = tempfile.mkdtemp(prefix="comet-bench-tb-")
        self.control = tempfile.mkdtemp(prefix="cb-", dir="/tmp")   # short ssh ControlPath
        port = free_port()
        if hosts is not None:
            hosts = [dict(h, uri=h["uri"](self.directory)) for h in hosts]
        extra = {"debug": {"stall_ms": self.stall_ms}} if self.stall_ms else None
        config = comet_config(stack, self.directory, port, self.control, extra, hosts=hosts)
        made = subprocess.run([sys.executable, "-m", "comet.admin", "--config", config,
                               "bootstrap"], env=_twistd_env(), cwd=self.directory,
                              capture_output=True, check=True)
        self.client = Client(f"http://127.0.0.1:{port}", made.stdout.decode().splitlines()[2])
        self.log = os.path.join(self.directory, "twistd.log")
        self.config = config
        self.start()

    def start(self) -> None:
        """Start C{twistd -n comet} over this daemon's files (again, after L{halt})."""
        self.process = subprocess.Popen(
            TWISTD + ["-n", "--pidfile=", "--logfile", self.log, "comet", "--config",
                      self.config], env=_twistd_env(), cwd=self.directory)

    def wait_listening(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client.ok("GET", "/cluster")
                return
            except (OSError, RuntimeError):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the daemon did not listen; see " + self.log)
                time.sleep(0.2)

    def halt(self) -> None:
        """Stop the process (SIGTERM, SIGKILL after 30 s), keeping its files."""
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def stop(self) -> None:
        """Stop the process and remove its files."""
        self.halt()
        if self.stall_ms:
            self._keep_stalls()
        shutil.rmtree(self.directory, ignore_errors=True)
        shutil.rmtree(self.control, ignore_errors=True)

    def _keep_stalls(self) -> None:
        """Append the stalls this daemon logged (with their stacks) to L{stall_log}."""
        with open(self.log, errors="replace") as f:
            text = f.read()
        # A stall is a warning line and its stack: the indented lines after it.
        kept, keep = [], False
        for line in text.splitlines():
            if "did not run for" in line:
                keep = True
            elif not line.startswith((" ", "\t")) and "File " not in line:
                keep = False
            if keep:
                kept.append(line)
        os.makedirs(os.path.dirname(self.stall_log), exist_ok=True)
        with open(self.stall_log, "a") as f:
            f.write("\n".join(kept) + "\n" if kept else "")
        print(f"{sum('did not run for' in k for k in kept)} stall(s) of"
              f" >= {self.stall_ms} ms logged; see {self.stall_log}")



def running_stack() -> dict | None:
    """
    The testbed's C{stack.json} if the testbed is up (C{testbed/stack status}
    answers 0); else C{None}, having printed why the bench is skipped.
    """
    try:
        with open(os.path.join(STATE, "stack.json")) as f:
            stack = json.load(f)
    except OSError:
        print(f"skipped: the testbed is not up (no {STATE}/stack.json; testbed/stack up)")
        return None
    if subprocess.run([os.path.join(ROOT, "testbed", "stack"), "status"],
                      capture_output=True).returncode != 0:
        print("skipped: the testbed is not up (testbed/stack status failed)")
        return None
    return stack


def a_pool(client: Client, stack: dict) -> str:
    """A pool of the testbed with room for two copies of the guest image."""
    need = 2 * stack["guest"]["image_size"]
    pools = [client.ok("GET", f"/storagepools/{s['storagepool']}") for s in stack["servers"]]
    return next(p["name"] for p in pools if p["state"] == "active" and p["available"] >= need)


def measure(stack: dict, rounds: int) -> dict:
    token = secrets.token_hex(3)
    daemon = Daemon(stack)
    client = daemon.client
    image_url, image_server = serve_file(stack["guest"]["image"])
    result: dict = {"token": token}
    clusters: list[str] = []
    base = template = pool = None
    try:
        daemon.wait_listening()
        pool = a_pool(client, stack)
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
        daemon.stop()
        image_server.shutdown()
    return result


#: VM starts in the mixed measurement (the issue's 50).
MIXED_STARTS = 50


def _test_node(k: int):
    """The URI maker of test-driver node C{k} (its XML file goes in the daemon's directory)."""
    def uri(directory: str) -> str:
        return make_node_xml(os.path.join(directory, f"node-{k}.xml"), cpus=16,
                             memory_mb=64 * 1024, domains=[])
    return {"name": f"sim-{k}", "uri": uri, "domain_type": "test"}


def measure_mixed(stack: dict) -> dict:
    """C{GET /cluster} while a download and 50 VM starts run at once (see the docstring)."""
    token = secrets.token_hex(3)
    daemon = Daemon(stack, hosts=[_test_node(k) for k in range(4)])
    client = daemon.client
    image_url, image_server = serve_file(stack["guest"]["image"])
    pool = volume = None
    cluster, template = f"bench-{token}-sim", f"bench{token}sim"
    try:
        daemon.wait_listening()
        pool = a_pool(client, stack)
        client.ok("POST", "/templates", {"name": template, "memory": 64, "cpus": 1})
        client.ok("POST", "/cluster", {"name": cluster})
        names = [client.ok("POST", f"/cluster/{cluster}/vms", {"template": template})["name"]
                 for _ in range(MIXED_STARTS)]
        idle, _ = probe_while(client, None)
        volume = f"bench-{token}-mixed"
        t0 = time.monotonic()
        download = client.ok("POST", f"/storagepools/{pool}/storagevolumes",
                             {"name": volume, "url": image_url})
        # The starts from bench/_load.py (one asyncio process, each POST on its
        # own connection, all sent at once, probes back to back on another),
        # as bench/api.py measures them: its first 200 probes, before the
        # starts, already run beside the download.
        port = client.base.rsplit(":", 1)[1]
        out = subprocess.run(
            [sys.executable, LOAD, "busy", port, "/cluster",
             *[f"/cluster/{cluster}/vms/{name}/start" for name in names]],
            env=dict(os.environ, COMET_TOKEN=client.token), capture_output=True, check=True)
        busy = json.loads(out.stdout)
        after, _ = probe_while(client, download["href"])
        download_s = time.monotonic() - t0
        running = sum(vm["state"] == "running" for vm in client.ok("GET", f"/cluster/{cluster}/vms"))
        return {"idle": summary(idle), "download": busy["probe_idle"], "starts": busy["probe_busy"],
                "after": summary(after), "download_s": round(download_s, 2),
                "starts_s": busy["posts_wall_s"], "start_codes": busy["post_statuses"],
                "vms": len(names), "running": running}
    finally:
        client.request("DELETE", f"/cluster/{cluster}", {"force": True})
        client.request("DELETE", f"/templates/{template}")
        if volume:
            client.request("DELETE", f"/storagepools/{pool}/storagevolumes/{volume}")
        daemon.stop()
        image_server.shutdown()


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
    mixed = result["mixed"]
    lines += ["", f"GET /cluster while the download and {mixed['vms']} VM starts run at once"
              " (a daemon on 4 test-driver hosts and the testbed's storage), ms:",
              f"{'while':<34} {'count':>6} {'median':>8} {'p95':>8} {'p99':>8} {'max':>8}"]
    for key, label in (("idle", "nothing runs (baseline)"),
                       ("download", "download"),
                       ("starts", f"download + {mixed['vms']} starts"),
                       ("after", "download, once the starts ended")):
        r = mixed[key]
        lines.append(f"{label:<34} {r['count']:>6} {r['median_ms']:>8} {r['p95_ms']:>8}"
                     f" {r['p99_ms']:>8} {r['max_ms']:>8}")
    lines.append(f"starts {mixed['starts_s']} s (answers {mixed['start_codes']},"
                 f" {mixed['running']} of {mixed['vms']} running after), download"
                 f" {mixed['download_s']} s; p99 busy/idle"
                 f" {round(mixed['starts']['p99_ms'] / mixed['idle']['p99_ms'], 2)}x"
                 " (target: p99 <= 50 ms)")
    save(result, "\n".join(lines), path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "testbed.json"))
    parser.add_argument("--stall-ms", type=float, default=0,
                        help="run the daemons with [debug] stall_ms and keep the stalls they log")
    parser.add_argument("--only-mixed", action="store_true",
                        help="only the download + 50 starts measurement")
    args = parser.parse_args()
    Daemon.stall_ms = args.stall_ms
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
    if args.only_mixed:
        mixed = measure_mixed(stack)
        print(json.dumps(mixed, indent=1))
        return 0
    result = measure(stack, args.rounds)
    result["mixed"] = measure_mixed(stack)
    report(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
