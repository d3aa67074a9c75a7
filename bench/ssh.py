"""
ssh command overhead on the testbed (issue 7): C{zfs list -H -p} on a storage
server through Comet's L{comet.remote.SSHRunner}, against the same command by
the OpenSSH client over an open ControlMaster connection, and by a fresh ssh
(a new connection each time).

    .venv/bin/python bench/ssh.py [--config testbed/state/comet.toml] [--rounds 30]
                                  [--json bench/results/ssh.json]

The three are run in turns, one of each per round, so that load on the
machine falls on all of them alike.  Skips, saying so, when the testbed's
configuration is absent or its first storage server does not answer.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import attrs  # noqa: E402
from _report import save, summary  # noqa: E402
from twisted.internet import defer, task  # noqa: E402

from comet.config import load  # noqa: E402
from comet.remote._command import remote_command  # noqa: E402
from comet.remote._runner import SSHRunner  # noqa: E402

COMMAND = ["zfs", "list", "-H", "-p"]


def deferred_sleep(reactor, seconds):
    return task.deferLater(reactor, seconds, lambda: None)


async def measure(reactor, args) -> dict:
    config = load(args.config)
    server = config.storageservers[0]
    control_dir = tempfile.mkdtemp(prefix="comet-bench-ssh-")
    runner = SSHRunner(reactor, server, attrs.evolve(config.storage, control_dir=control_dir))
    base = runner.ssh_argv()  # everything up to the host, with Comet's ControlPath
    remote = remote_command(COMMAND)
    fresh = list(base)
    # A fresh connection each time: no master, no shared socket.
    for i, a in enumerate(fresh):
        if a.startswith("ControlMaster="):
            fresh[i] = "ControlMaster=no"
        elif a.startswith("ControlPath="):
            fresh[i] = "ControlPath=none"
    try:
        await runner.run(COMMAND, timeout=30)  # opens the master
        times = {"comet": [], "master": [], "fresh": []}
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            out = await runner.run(COMMAND, timeout=30)
            times["comet"].append(time.perf_counter() - t0)
            assert out, "zfs list answered nothing"
            t0 = time.perf_counter()
            subprocess.run(base + [remote], check=True, capture_output=True, timeout=30)
            times["master"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            subprocess.run(fresh + [remote], check=True, capture_output=True, timeout=30)
            times["fresh"].append(time.perf_counter() - t0)
            await deferred_sleep(reactor, 0)
    finally:
        await runner.stop()
        shutil.rmtree(control_dir, ignore_errors=True)
    result = {k: summary(v) for k, v in times.items()}
    result["server"] = server.host
    result["ratio"] = {
        "comet_vs_master": round(result["comet"]["median_ms"] / result["master"]["median_ms"], 2),
        "fresh_vs_master": round(result["fresh"]["median_ms"] / result["master"]["median_ms"], 2),
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "testbed", "state", "comet.toml"))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "ssh.json"))
    args = parser.parse_args()
    if not os.path.exists(args.config):
        print(f"skipped: no testbed configuration at {args.config} (testbed/stack up)")
        return 0
    config = load(args.config)
    if not config.storageservers:
        print(f"skipped: {args.config} has no storage server")
        return 0
    probe = subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
         "-o", f"UserKnownHostsFile={config.storageservers[0].ssh_known_hosts}",
         "-i", config.storageservers[0].ssh_identity, "-l", config.storageservers[0].ssh_user,
         "-p", str(config.storageservers[0].ssh_port), config.storageservers[0].host, "true"],
        capture_output=True,
    )
    if probe.returncode != 0:
        print(f"skipped: storage server {config.storageservers[0].host} does not answer"
              f" ({probe.stderr.decode(errors='replace').strip()})")
        return 0
    result = {}

    async def go(reactor):
        result.update(await measure(reactor, args))
        report(result, args.json)

    task.react(lambda reactor: defer.ensureDeferred(go(reactor)))
    return 0  # not reached: react exits


def report(result: dict, path: str) -> None:
    lines = [f"zfs list -H -p on {result['server']} ({result['comet']['count']} rounds)",
             f"{'how':<28} {'median':>8} {'p95':>8} {'max':>8}"]
    for key, label in (("comet", "Comet SSHRunner"), ("master", "ssh, open ControlMaster"),
                       ("fresh", "ssh, fresh connection")):
        r = result[key]
        lines.append(f"{label:<28} {r['median_ms']:>8} {r['p95_ms']:>8} {r['max_ms']:>8}")
    lines.append(f"Comet / open master: {result['ratio']['comet_vs_master']}x (target <= 1.3x);"
                 f" fresh / open master: {result['ratio']['fresh_vs_master']}x")
    save(result, "\n".join(lines), path)


if __name__ == "__main__":
    sys.exit(main())
