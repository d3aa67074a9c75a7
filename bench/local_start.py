"""
Local-copy mode's start (issue 21) with a warm local copy against a cold
one, through Comet's API on the testbed: a VM whose disk holds C{--data-mib}
of random data (written into the base volume on its storage server) starts
on host3 (the testbed's compute host with its own OpenZFS):

  - B{cold}: a new VM's first start: its disk copied whole to host3;
  - B{warm}: the same VM started again after a stop that kept its copy on the
    host (C{[[hosts]] local_keep = true}): only what changed since (here:
    nothing on the server's side, the stop having synced the guest's
    writes back) is sent.

Each time is the request to the finished start task.  C{--rounds} new VMs,
each started cold then warm; medians and warm / cold.

    flock /tmp/comet-testbed.lock .venv/bin/python bench/local_start.py \\
        [--data-mib 256] [--rounds 3] [--json bench/results/local_start.json]

Skips, saying so, when the testbed (with host3) is not up.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time
from statistics import median

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from _report import save  # noqa: E402
from testbed import Daemon, running_stack  # noqa: E402  (bench/testbed.py)
from tests.integration._testbed import sshArgv  # noqa: E402


def _ssh(stack: dict, server: dict, command: str, control: str) -> str:
    done = subprocess.run(sshArgv(stack, server, command, control), capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{server['address']}: {command}: {done.stderr.strip()}")
    return done.stdout


def _timed_start(client, vm: dict) -> float:
    t0 = time.monotonic()
    client.wait(client.ok("POST", vm["href"] + "/start", {}))
    return round(time.monotonic() - t0, 2)


def measure(stack: dict, data_mib: int, rounds: int) -> dict:
    token = secrets.token_hex(3)
    host3 = stack["local_hosts"][0]
    local = {"name": "local", "uri": lambda d, uri=stack["host_uri"]: uri,
             "domain_type": stack["domain_type"]}
    kept = dict(host3, uri=lambda d, uri=host3["uri"]: uri, local_keep=True)
    daemon = Daemon(stack, hosts=[local, kept])
    client = daemon.client
    result: dict = {"token": token, "data_mib": data_mib, "cold_s": [], "warm_s": []}
    base = template = cluster = pool = None
    try:
        daemon.wait_listening()
        server = stack["servers"][-1]
        pool = server["storagepool"]
        base = f"bench-{token}-local"
        client.wait(client.ok("POST", f"/storagepools/{pool}/storagevolumes",
                              {"name": base, "capacity": 1}))
        _ssh(stack, server, f"dd if=/dev/urandom of=/dev/zvol/{server['dataset']}/{base}"
                            f" bs=1M count={data_mib} 2>/dev/null && sync", daemon.control)
        template, cluster = f"benchl{token}", f"bench-{token}-l"
        client.ok("POST", "/templates", {"name": template, "memory": 64, "cpus": 1,
                                         "disk": {"pool": pool, "volume": base},
                                         "disk_mode": "local"})
        client.ok("POST", "/cluster", {"name": cluster})
        result["loadavg"] = open("/proc/loadavg").read().split()[:3]
        for _ in range(rounds):
            vm = client.ok("POST", f"/cluster/{cluster}/vms", {"template": template})
            result["cold_s"].append(_timed_start(client, vm))
            client.wait(client.ok("POST", vm["href"] + "/stop", {"timeout": 0, "force": True}))
            result["warm_s"].append(_timed_start(client, vm))
            client.wait(client.ok("POST", vm["href"] + "/stop", {"timeout": 0, "force": True}))
            client.ok("DELETE", vm["href"], {"force": True})
        result["ratio_warm_cold"] = round(median(result["warm_s"]) / median(result["cold_s"]), 3)
    finally:
        if daemon.process.poll() is None:
            if cluster:
                client.request("DELETE", f"/cluster/{cluster}", {"force": True})
            if template:
                client.request("DELETE", f"/templates/{template}")
            if base:
                client.request("DELETE", f"/storagepools/{pool}/storagevolumes/{base}")
        daemon.stop()
    return result


def report(result: dict, path: str) -> None:
    lines = [
        f"Local-copy mode start on host3, a disk holding {result['data_mib']} MiB"
        f" (medians of {len(result['cold_s'])}; load {' '.join(result['loadavg'])}):",
        "",
        "| start | seconds (each) | median |",
        "|---|---|---|",
        f"| cold (whole copy) | {result['cold_s']} | {median(result['cold_s'])} |",
        f"| warm (kept copy, increment) | {result['warm_s']} | {median(result['warm_s'])} |",
        "",
        f"warm / cold: {result['ratio_warm_cold']}",
    ]
    save(result, "\n".join(lines), path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results",
                                                       "local_start.json"))
    args = parser.parse_args()
    stack = running_stack()
    if stack is None:
        return 0
    if not stack.get("local_hosts"):
        print("skipped: the testbed has no compute host with a local dataset (host3)")
        return 0
    report(measure(stack, args.data_mib, args.rounds), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
