"""
The event stream (issue 19): how long a VM's state change takes to reach
the clients of C{GET /events}, with C{--clients} (100) connected, and what
each connected client costs the daemon in memory.

    .venv/bin/python bench/events.py [--clients 100] [--rounds 20]
                                     [--json bench/results/events.json]

It starts C{twistd -n comet} on the embedded default's compute host
(libvirt's C{test:///default}), with a fresh database, and one VM.  It reads
the daemon's resident memory (C{VmRSS}), connects the clients (plain
sockets, C{GET /events?type=vm.state}, one thread reads them all with
C{selectors} and stamps each event as it arrives), reads the memory again,
then runs C{--rounds} times C{start} and C{poweroff} of the VM.  For each
action it records, for every client, the time from just before the action's
request was sent to the arrival of the VM's C{vm.state} event (the action's
own time included: libvirt's event comes during or just after it), and the
action's own answer time for comparison.

Prints the latency summary (ms) over all clients and actions, the action's
own, and the memory per client (the difference of the two readings divided
by the clients: one reading each, so a rough figure).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

from _client import Client  # noqa: E402
from _report import save, summary  # noqa: E402
from own_writes import free_port, start_daemon  # noqa: E402


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Listeners:
    """C{n} stream clients read by one thread: arrival times of each C{vm.state} state, per client."""

    def __init__(self, port: int, token: str, n: int):
        self.selector = selectors.DefaultSelector()
        self.arrivals: list[list[tuple[float, str]]] = [[] for _ in range(n)]
        self.buffers = [b""] * n
        self.stopping = False
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(f"GET /events?type=vm.state HTTP/1.0\r\nAuthorization: Bearer {token}"
                      "\r\n\r\n".encode())
            s.setblocking(False)
            self.selector.register(s, selectors.EVENT_READ, i)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            for key, _ in self.selector.select(timeout=0.2):
                now = time.monotonic()
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                if not data:
                    self.selector.unregister(key.fileobj)
                    continue
                i = key.data
                self.buffers[i] += data
                while b"\n\n" in self.buffers[i]:
                    block, _, self.buffers[i] = self.buffers[i].partition(b"\n\n")
                    for line in block.split(b"\n"):
                        if line.startswith(b"data: "):
                            state = json.loads(line[6:]).get("state")
                            self.arrivals[i].append((now, state))

    def connected(self) -> int:
        return len(self.selector.get_map())

    def close(self):
        self.stopping = True
        self.thread.join(5)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "events.json"))
    args = parser.parse_args()

    directory = tempfile.mkdtemp(prefix="comet-events-")
    port = free_port()
    daemon, token = start_daemon(directory, port)
    latencies: list[float] = []
    actions: list[float] = []
    missing = 0
    try:
        client = Client(f"http://127.0.0.1:{port}", token, timeout=30)
        for path, body in [("/templates", {"name": "t", "memory": 64, "cpus": 1}),
                           ("/cluster", {"name": "lab"}),
                           ("/cluster/lab/vms", {"template": "t", "name": "vm"})]:
            client.ok("POST", path, body)
        # Warm up the paths the measured part runs (and the allocator).
        client.ok("POST", "/cluster/lab/vms/vm/start", {})
        client.ok("POST", "/cluster/lab/vms/vm/poweroff", {})
        time.sleep(1)
        before = rss_kib(daemon.pid)
        listeners = Listeners(port, token, args.clients)
        time.sleep(2)   # every stream open (the daemon has answered each)
        after = rss_kib(daemon.pid)
        try:
            for _ in range(args.rounds):
                for action, state in (("start", "running"), ("poweroff", "shutoff")):
                    seen = [len(a) for a in listeners.arrivals]
                    sent = time.monotonic()
                    client.ok("POST", f"/cluster/lab/vms/vm/{action}", {})
                    actions.append(time.monotonic() - sent)
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline and not all(
                            any(s == state for _, s in a[n:])
                            for a, n in zip(listeners.arrivals, seen)):
                        time.sleep(0.002)
                    for a, n in zip(listeners.arrivals, seen):
                        times = [t for t, s in a[n:] if s == state]
                        if times:
                            latencies.append(times[0] - sent)
                        else:
                            missing += 1
            connected = listeners.connected()
        finally:
            listeners.close()
    finally:
        daemon.terminate()
        daemon.wait(10)
    per_client = (after - before) / args.clients
    result = {
        "clients": args.clients,
        "connected_at_end": connected,
        "rounds": args.rounds,
        "event_latency": summary(latencies),
        "action_latency": summary(actions),
        "missing_events": missing,
        "rss_kib_before": before,
        "rss_kib_with_clients": after,
        "kib_per_client": round(per_client, 1),
    }
    ms = summary(latencies)
    table = "\n".join([
        f"{args.clients} clients of GET /events, {args.rounds} x (start, poweroff) of one VM"
        " (test:///default)",
        "state change -> event at each client (ms, from the action's request): " + ", ".join(
            f"{k[:-3]} {v}" for k, v in ms.items() if k != "count") + f" (n={ms['count']})",
        "the action's own answer (ms): " + ", ".join(
            f"{k[:-3]} {v}" for k, v in summary(actions).items() if k != "count"),
        f"events missing: {missing}; clients still connected: {connected}",
        f"daemon RSS: {before} KiB -> {after} KiB with the clients:"
        f" {per_client:.1f} KiB per client (one reading each)",
    ])
    save(result, table, args.json)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
