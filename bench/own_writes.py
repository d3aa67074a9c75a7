"""
Read-your-writes proof (issue 14): does the answer of a VM action show the
state the action left the VM in, even when the machine is too busy for
libvirt's lifecycle events to arrive first?

    .venv/bin/python bench/own_writes.py [--rounds 200] [--busy 2]
                                         [--json bench/results/own_writes.json]

It starts C{twistd -n comet} on the embedded default's compute host (libvirt's
in-process C{test:///default} driver, where every action, shutdown included,
is complete when its call returns) with an API on a free loopback port and a
fresh database, and C{--busy} processes that spin on a CPU each.  Then each
round runs one VM through C{start, suspend, resume, reset, shutdown, start,
poweroff} (POST C{/cluster/lab/vms/vm/<action>}) and compares each answer's
C{state} with the state the action leaves a VM in.  A different one is
I{stale}: the daemon showed the state before its own change.  An action
refused (a 409 because the daemon still believed the state before: a start
right after a shutdown it showed as running) is counted as I{refused}, and the
round ends there (the VM is powered off for the next).

Prints the counts (and writes them as JSON); exits 1 if any answer was stale
or refused.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

from _client import Client  # noqa: E402
from _report import save, summary  # noqa: E402

#: One round: each action and the state it leaves a VM in on the test driver.
ROUND = (
    ("start", "running"),
    ("suspend", "paused"),
    ("resume", "running"),
    ("reset", "running"),
    ("shutdown", "shutoff"),
    ("start", "running"),
    ("poweroff", "shutoff"),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_daemon(directory: str, port: int) -> tuple[subprocess.Popen, str]:
    config = os.path.join(directory, "comet.toml")
    with open(config, "w") as f:
        f.write(f'[api]\nendpoint = "tcp:{port}:interface=127.0.0.1"\n'
                f'[database]\npath = "{directory}/comet.sqlite"\n')
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    made = subprocess.run(
        [sys.executable, "-m", "comet.admin", "--config", config, "bootstrap"],
        env=env, cwd=directory, capture_output=True, text=True, check=True,
    )
    token = made.stdout.splitlines()[2]
    log = open(os.path.join(directory, "twistd.log"), "w")
    daemon = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "comet", "--config", config],
        env=env, cwd=directory, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise SystemExit(f"twistd exited; see {log.name}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return daemon, token
        except OSError:
            time.sleep(0.1)
    daemon.kill()
    raise SystemExit("twistd did not listen within 30 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--busy", type=int, default=2, help="CPU-spinning processes")
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "own_writes.json"))
    args = parser.parse_args()

    directory = tempfile.mkdtemp(prefix="comet-own-writes-")
    port = free_port()
    daemon, token = start_daemon(directory, port)
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)
    ]
    stale: list[dict] = []
    refused: list[dict] = []
    latencies: list[float] = []
    answers = 0
    started = time.monotonic()
    try:
        client = Client(f"http://127.0.0.1:{port}", token, timeout=30)
        for path, body in [("/templates", {"name": "t", "memory": 64, "cpus": 1}),
                           ("/cluster", {"name": "lab"}),
                           ("/cluster/lab/vms", {"template": "t", "name": "vm"})]:
            code, answer = client.request("POST", path, body)
            if code != 201:
                raise SystemExit(f"POST {path}: {code} {answer}")
        for round_ in range(args.rounds):
            for action, expected in ROUND:
                asked = time.monotonic()
                code, answer = client.request("POST", f"/cluster/lab/vms/vm/{action}", {})
                latencies.append(time.monotonic() - asked)
                if code != 200:
                    # Refused: the daemon believed a stale state (a start
                    # after a shutdown it still showed running is a 409).
                    refused.append({"round": round_, "action": action, "code": code,
                                    "reason": (answer or {}).get("reason")})
                    power_off(client)
                    break
                answers += 1
                if answer["state"] != expected:
                    stale.append({"round": round_, "action": action,
                                  "answered": answer["state"], "expected": expected})
    finally:
        for spinner in spinners:
            spinner.kill()
        daemon.terminate()
        daemon.wait(10)
    seconds = time.monotonic() - started
    result = {
        "rounds": args.rounds,
        "busy_processes": args.busy,
        "answers": answers,
        "stale": len(stale),
        "stale_answers": stale[:50],
        "refused": len(refused),
        "refused_actions": refused[:50],
        "seconds": round(seconds, 1),
        "action_latency": summary(latencies),
    }
    by_action: dict[str, int] = {}
    for s in stale:
        by_action[s["action"]] = by_action.get(s["action"], 0) + 1
    table = "\n".join([
        f"{args.rounds} rounds x {len(ROUND)} actions with {args.busy} CPU-spinning processes,"
        f" {seconds:.1f} s",
        f"answers: {answers}   stale: {len(stale)}"
        + (f"   ({', '.join(f'{a}: {n}' for a, n in sorted(by_action.items()))})" if stale else "")
        + f"   refused: {len(refused)}",
        "action latency (ms): " + ", ".join(
            f"{k[:-3]} {v}" for k, v in summary(latencies).items() if k != "count"),
    ])
    save(result, table, args.json)
    return 1 if stale or refused else 0


def power_off(client: Client) -> None:
    """Bring the VM back to shut off (after a refused action), to start the next round there."""
    for _ in range(50):
        code, vm = client.request("GET", "/cluster/lab/vms/vm")
        if vm["state"] == "shutoff":
            return
        client.request("POST", "/cluster/lab/vms/vm/poweroff", {})
        time.sleep(0.1)
    raise SystemExit("the VM did not reach shutoff")


if __name__ == "__main__":
    sys.exit(main())
