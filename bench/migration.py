"""
Live migration on the testbed's two compute hosts (issue 17): a 256 MiB
guest (the testbed's guest image, booted from its zvol over iSCSI) moved
back and forth through Comet's API (C{POST .../migrate}, until its task is
finished), against raw C{virsh migrate --live} of the same guest between the
same hosts, in the same run:

  - B{total}: wall time of one move (Comet: the request to the finished task,
    its exports admitted to the destination and withdrawn from the source
    included; virsh: the command);
  - B{downtime}: how long the guest was paused for the last copy, as libvirt
    measured it (C{jobStats} of the completed job, on the destination).

For the raw moves Comet's daemon is stopped and the destination is given
what Comet's migration gives it first (its address on the disk's tgt
target, the CHAP secret in its libvirt); the guest is moved back by hand
before the daemon starts again, so its record is right.

    .venv/bin/python bench/migration.py [--rounds 3] [--json bench/results/migration.json]

Skips, saying so, when the testbed is not up or has one compute host.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sqlite3
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from _report import save  # noqa: E402
from testbed import Daemon, a_pool, running_stack, serve_file  # noqa: E402  (bench/testbed.py)
from comet.remote.tgt import parse_targets  # noqa: E402
from comet.virt import secret_xml  # noqa: E402
from tests.integration._testbed import sshArgv  # noqa: E402


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _completed_downtime_ms(uri: str, domain: str) -> float | None:
    """The downtime of the last migration that reached C{domain} on C{uri}."""
    import libvirt

    libvirt.registerErrorHandler(lambda ctx, err: None, None)
    conn = libvirt.open(uri)
    try:
        stats = conn.lookupByName(domain).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        return stats.get("downtime")
    finally:
        conn.close()


def _host_by_name(stack: dict) -> dict[str, dict]:
    return {h["name"]: h for h in stack["hosts"]}


class Raw:
    """
    C{virsh migrate --live} of Comet's guest, with the destination admitted by
    hand as Comet admits it (tgt ACL address, CHAP secret), withdrawn after.
    """

    def __init__(self, stack: dict, database: str, uuid: str, control: str):
        self.stack = stack
        self.hosts = _host_by_name(stack)
        self.domain = f"comet-{uuid}"
        self.control = control
        conn = sqlite3.connect(database)
        try:
            self.volumes = conn.execute(
                "SELECT target, chap_user, chap_secret, secret_uuid, pool FROM storage_volumes"
                " WHERE vm_uuid = ?", (uuid,)).fetchall()
        finally:
            conn.close()

    def _server(self, pool: str) -> dict:
        return next(s for s in self.stack["servers"] if s["storagepool"] == pool)

    def _ssh(self, server: dict, command: str, check: bool = True) -> str:
        return subprocess.run(sshArgv(self.stack, server, command, self.control),
                              capture_output=True, text=True, check=check).stdout

    def _tgt(self, server: dict, op: str, target: str, address: str) -> None:
        """Bind (or unbind) C{address} on C{target}'s ACL, as Comet's admit (refuse) does."""
        shown = parse_targets(self._ssh(server, "tgtadm --lld iscsi --mode target --op show"))
        [tid] = [t.tid for t in shown if t.iqn == target]
        self._ssh(server, f"tgtadm --lld iscsi --mode target --op {op} --tid {tid}"
                          f" --initiator-address {address}", check=op == "bind")

    def _virsh(self, uri: str, *args: str, stdin: str | None = None) -> str:
        return subprocess.run(["virsh", "-q", "-c", uri, *args], input=stdin, text=True,
                              capture_output=True, check=True).stdout

    def admit(self, host: str) -> None:
        uri, address = self.hosts[host]["uri"], self.hosts[host]["address"]
        for target, user, secret, secret_uuid, server in self.volumes:
            self._tgt(self._server(server), "bind", target, address)
            xml = secret_xml(secret_uuid, f"comet-{user}")
            path = os.path.join(self.control, "secret.xml")
            with open(path, "w") as f:
                f.write(xml)
            self._virsh(uri, "secret-define", path)
            self._virsh(uri, "secret-set-value", secret_uuid, "--file", "/dev/stdin", "--plain",
                        stdin=secret)

    def withdraw(self, host: str) -> None:
        uri, address = self.hosts[host]["uri"], self.hosts[host]["address"]
        for target, user, secret, secret_uuid, server in self.volumes:
            self._tgt(self._server(server), "unbind", target, address)
            subprocess.run(["virsh", "-q", "-c", uri, "secret-undefine", secret_uuid],
                           capture_output=True)

    def migrate(self, source: str, dest: str) -> tuple[float, float | None]:
        """One raw move: its wall time (s) and downtime (ms)."""
        t0 = time.monotonic()
        self._virsh(self.hosts[source]["uri"], "migrate", "--live", "--persistent",
                    "--undefinesource", self.domain, self.hosts[dest]["uri"])
        took = time.monotonic() - t0
        return took, _completed_downtime_ms(self.hosts[dest]["uri"], self.domain)


def measure(stack: dict, rounds: int, boot_wait: float) -> dict:
    token = secrets.token_hex(3)
    hosts = [dict(h, uri=lambda directory, uri=h["uri"]: uri) for h in stack["hosts"]]
    daemon = Daemon(stack, hosts=hosts)
    client = daemon.client
    image_url, image_server = serve_file(stack["guest"]["image"])
    result: dict = {"token": token, "memory_mb": 256}
    base = template = cluster = pool = None
    try:
        daemon.wait_listening()
        pool = a_pool(client, stack)
        base = f"bench-{token}-mig"
        client.wait(client.ok("POST", f"/storagepools/{pool}/storagevolumes",
                              {"name": base, "url": image_url}))
        template, cluster = f"benchm{token}", f"bench-{token}-m"
        client.ok("POST", "/templates", {"name": template, "memory": 256, "cpus": 1,
                                         "disk": {"pool": pool, "volume": base}})
        client.ok("POST", "/cluster", {"name": cluster})
        vm = client.ok("POST", f"/cluster/{cluster}/vms", {"template": template})
        started = client.ok("POST", vm["href"] + "/start", {})
        first = started["host"]
        second = next(h["name"] for h in stack["hosts"] if h["name"] != first)
        time.sleep(boot_wait)   # the guest boots (TCG) and idles at its prompt
        domain = f"comet-{vm['uuid']}"
        uris = {h["name"]: h["uri"] for h in stack["hosts"]}
        comet = {"total_s": [], "downtime_ms": []}
        raw = {"total_s": [], "downtime_ms": []}
        here = first
        for _ in range(rounds):
            for _ in range(2):   # there and back
                there = second if here == first else first
                t0 = time.monotonic()
                client.wait(client.ok("POST", vm["href"] + "/migrate", {"host": there}))
                comet["total_s"].append(round(time.monotonic() - t0, 2))
                comet["downtime_ms"].append(_completed_downtime_ms(uris[there], domain))
                here = there
        # The raw baseline, the daemon stopped (it would see a VM on the wrong host).
        database = os.path.join(daemon.directory, "comet.sqlite")
        daemon.halt()
        moves = Raw(stack, database, vm["uuid"], daemon.control)
        for _ in range(rounds):
            for _ in range(2):
                there = second if here == first else first
                moves.admit(there)
                took, downtime = moves.migrate(here, there)
                moves.withdraw(here)
                raw["total_s"].append(round(took, 2))
                raw["downtime_ms"].append(downtime)
                here = there
        result["hosts"] = [first, second]
        result["comet"] = comet
        result["virsh"] = raw
        for key in ("total_s", "downtime_ms"):
            got = [v for v in comet[key] if v is not None]
            base_values = [v for v in raw[key] if v is not None]
            if got and base_values and _median(base_values):
                result[f"ratio_{key}"] = round(_median(got) / _median(base_values), 2)
        # The daemon again, over the same files, to delete what was made.
        daemon.start()
        daemon.wait_listening()
    finally:
        if daemon.process.poll() is None:
            if cluster:
                client.request("DELETE", f"/cluster/{cluster}", {"force": True})
            if template:
                client.request("DELETE", f"/templates/{template}")
            if base:
                client.request("DELETE", f"/storagepools/{pool}/storagevolumes/{base}")
        daemon.stop()
        image_server.shutdown()
    return result


def report(result: dict, path: str) -> None:
    comet, raw = result["comet"], result["virsh"]
    lines = [
        f"Live migration of a {result['memory_mb']} MiB guest between"
        f" {' and '.join(result['hosts'])} (medians of {len(comet['total_s'])} moves each):",
        "",
        "| | Comet (API, task) | virsh migrate --live | ratio |",
        "|---|---|---|---|",
        f"| total (s) | {_median(comet['total_s'])} | {_median(raw['total_s'])}"
        f" | {result.get('ratio_total_s', '-')} |",
        f"| downtime (ms) | {_median([d for d in comet['downtime_ms'] if d is not None] or [0])}"
        f" | {_median([d for d in raw['downtime_ms'] if d is not None] or [0])}"
        f" | {result.get('ratio_downtime_ms', '-')} |",
    ]
    save(result, "\n".join(lines), path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--boot-wait", type=float, default=60)
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results",
                                                       "migration.json"))
    args = parser.parse_args()
    stack = running_stack()
    if stack is None:
        return 0
    if len(stack.get("hosts", [])) < 2:
        print("skipped: the testbed has one compute host (stack.json 'hosts')")
        return 0
    report(measure(stack, args.rounds, args.boot_wait), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
