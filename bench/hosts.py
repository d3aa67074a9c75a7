"""
Placement and list latency with both real compute hosts against one (issue 17).

Two daemons on the testbed, one after the other, alike but for their hosts:
the first knows only C{local}, the second C{local} and C{host2} (the second
libvirtd, reached over C{qemu+libssh2}).  In each, a cluster of C{--vms}
diskless VMs (64 MiB; TCG guests idling in their firmware) is made and:

  - B{placement}: each VM's C{POST .../start} (the placement rule picks a
    host, the domain is defined and started there), one after the other;
  - B{list}: C{GET /cluster/:c/vms} back to back, the VMs running (the live
    states come from every host the cluster's VMs are placed on);
  - B{cluster}: C{GET /cluster} back to back (every host asked).

The figures are medians and p95 in ms, and the ratio two hosts / one host in
the same run (a remote host answers over ssh, so some cost is expected; the
point is that it stays small).  With two hosts, the second half of the VMs
start while the first host is in maintenance, so both hosts run VMs and the
list and cluster probes ask both.

    .venv/bin/python bench/hosts.py [--vms 4] [--probes 100] [--json bench/results/hosts.json]

Skips, saying so, when the testbed is not up.  Everything it makes carries a
random token and is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from _report import save, summary  # noqa: E402
from testbed import STATE, Daemon  # noqa: E402


def timed(call) -> float:
    """Seconds C{call()} took."""
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def one_daemon(stack: dict, hosts: list[dict], vms: int, probes: int, token: str) -> dict:
    """Placement, list and cluster latencies in a daemon that knows C{hosts}."""
    daemon = Daemon(stack, hosts=[dict(h, uri=lambda directory, uri=h["uri"]: uri) for h in hosts])
    client = daemon.client
    template, cluster = f"benchh{token}", f"bench-{token}-h{len(hosts)}"
    made: list[dict] = []
    try:
        daemon.wait_listening()
        client.ok("POST", "/templates", {"name": template, "memory": 64, "cpus": 1})
        client.ok("POST", "/cluster", {"name": cluster})
        made = [client.ok("POST", f"/cluster/{cluster}/vms", {"template": template})
                for _ in range(vms)]
        placement, placed = [], []
        for k, vm in enumerate(made):
            # With two hosts, the second half starts while the first host is
            # in maintenance: the rule (most free memory) would otherwise put
            # every small VM on the larger host, and the probes below would
            # ask only it.
            if len(hosts) > 1 and k == len(made) // 2:
                client.ok("POST", f"/hosts/{hosts[0]['name']}/maintenance", {"enabled": True})
            t0 = time.perf_counter()
            started = client.ok("POST", vm["href"] + "/start", {})
            placement.append(time.perf_counter() - t0)
            placed.append(started["host"])
        if len(hosts) > 1:
            client.ok("POST", f"/hosts/{hosts[0]['name']}/maintenance", {"enabled": False})
        listing = [timed(lambda: client.ok("GET", f"/cluster/{cluster}/vms")) for _ in range(probes)]
        clusters = [timed(lambda: client.ok("GET", "/cluster")) for _ in range(probes)]
        return {"hosts": [h["name"] for h in hosts],
                "placed_on": {h: placed.count(h) for h in sorted(set(placed))},
                "placement_ms": summary(placement),
                "list_ms": summary(listing),
                "cluster_ms": summary(clusters)}
    finally:
        if daemon.process.poll() is None:
            for vm in made:
                client.request("POST", vm["href"] + "/poweroff", {})
            client.request("DELETE", f"/cluster/{cluster}", {"force": True})
            client.request("DELETE", f"/templates/{template}")
        daemon.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=4)
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "hosts.json"))
    args = parser.parse_args()
    try:
        with open(os.path.join(STATE, "stack.json")) as f:
            stack = json.load(f)
    except OSError:
        print("skipped: the testbed is not up (testbed/stack up)")
        return 0
    if len(stack.get("hosts", [])) < 2:
        print("skipped: the testbed has one compute host")
        return 0
    token = secrets.token_hex(3)
    result = {"vms": args.vms, "loadavg": open("/proc/loadavg").read().split()[:3]}
    result["one"] = one_daemon(stack, stack["hosts"][:1], args.vms, args.probes, token)
    result["two"] = one_daemon(stack, stack["hosts"], args.vms, args.probes, token)
    lines = [f"{args.vms} diskless VMs; ms, median / p95 (ratio of medians two/one):"]
    for key, what in (("placement_ms", "placement (POST start)"), ("list_ms", "GET cluster's VMs"),
                      ("cluster_ms", "GET /cluster")):
        one, two = result["one"][key], result["two"][key]
        ratio = round(two["median_ms"] / one["median_ms"], 2) if one["median_ms"] else None
        result[f"ratio_{key}"] = ratio
        lines.append(f"  {what:24} one host {one['median_ms']:8.2f} / {one['p95_ms']:8.2f}"
                     f"   two hosts {two['median_ms']:8.2f} / {two['p95_ms']:8.2f}   ratio {ratio}")
    lines.append(f"  placed: one host {result['one']['placed_on']},"
                 f" two hosts {result['two']['placed_on']}")
    save(result, "\n".join(lines), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
