"""
Copying a zvol between the testbed's two storage servers through Comet
(issue 21's data path, L{comet.remote.zfs_send.send}): a whole copy against
an incremental one after a guest changed 5 % of the disk.  The figure of
merit is bytes sent / bytes changed for the increment (goal <= 1.05): a
local-mode VM's stop sends back what the guest wrote, not the disk.

    .venv/bin/python bench/zfs_send.py [--config testbed/state/comet.toml]
        [--size-mib 1024] [--changed 0.05] [--no-verify]
        [--json bench/results/zfs_send.json]

Run it under the testbed lock (C{flock /tmp/comet-testbed.lock ...}).  The
volume (sparse) is filled with random bytes on the first server (in the
storage VM: C{dd if=/dev/urandom}), snapshotted, copied whole to the second,
then C{--changed} of it is rewritten in distinct random 1 MiB pieces, as a
guest would, snapshotted and copied incrementally.  With C{--verify} (the
default) both zvols' SHA-256 are compared on the servers at the end.  The
size shrinks to what both pools can hold; everything made is destroyed.
Skips, saying so, when the testbed is not up.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import attrs  # noqa: E402
from _report import save  # noqa: E402
from twisted.internet import defer, task  # noqa: E402

from comet.config import load  # noqa: E402
from comet.remote import SSHRunner  # noqa: E402
from comet.remote.zfs import ZFS  # noqa: E402
from comet.remote.zfs_send import send  # noqa: E402

MiB = 1024 * 1024
OWNER = "comet-bench"

#: Rewrite 1 MiB pieces of device C{$1} from /dev/urandom at the MiB offsets
#: that follow, then flush (one command: a dd per ssh round trip would
#: measure ssh, not ZFS).
REWRITE_SCRIPT = (
    'dev=$1; shift; for o in "$@"; do'
    ' dd if=/dev/urandom of="$dev" bs=1048576 seek="$o" count=1 conv=notrunc 2>/dev/null'
    ' || exit 1; done; sync'
)


async def measure(reactor, args, config) -> dict:
    control = tempfile.mkdtemp(prefix="comet-bench-send-", dir="/tmp")
    storage = attrs.evolve(config.storage, control_dir=control, command_timeout=1800.0)
    source, dest = (SSHRunner(reactor, s, storage) for s in config.storageservers[:2])
    here, there = ZFS(source, owner=OWNER), ZFS(dest, owner=OWNER)
    made = []
    try:
        pools = []
        for zfs in (here, there):
            found = await zfs.pool_list()
            pools.append(max(found, key=lambda p: p.free))
        # Room for the volume on each side, and a quarter of the pool to spare.
        room = min(p.free - p.size // 4 for p in pools)
        size = min(args.size_mib * MiB, max(64 * MiB, room // MiB * MiB))
        token = uuid.uuid4().hex[:8]
        tops = [f"{p.name}/comet-bench-{token}" for p in pools]
        for zfs, top in zip((here, there), tops):
            await zfs.create_dataset(top)
            made.append((zfs, top))
        volume = await here.create_volume(tops[0], "disk", size, sparse=True)
        target = f"{tops[1]}/disk"
        device = await here.device_of(volume.name)
        t0 = time.perf_counter()
        await source.run(["dd", "if=/dev/urandom", f"of={device}", "bs=1048576",
                          f"count={size // MiB}", "conv=fsync"], timeout=1800)
        fill = time.perf_counter() - t0
        await here.snapshot([volume.name], "base")

        t0 = time.perf_counter()
        whole = await send(source, f"{volume.name}@base", dest, target, owner=OWNER)
        whole_s = time.perf_counter() - t0

        pieces = sorted(random.sample(range(size // MiB), max(1, round(size // MiB
                                                                       * args.changed))))
        changed = len(pieces) * MiB
        await source.run(["sh", "-c", REWRITE_SCRIPT, "comet-bench", device]
                         + [str(p) for p in pieces], timeout=1800)
        await here.snapshot([volume.name], "next")
        t0 = time.perf_counter()
        increment = await send(source, f"{volume.name}@next", dest, target,
                               base=f"{volume.name}@base", owner=OWNER)
        increment_s = time.perf_counter() - t0

        verified = None
        if args.verify:
            other = await there.device_of(target)
            sums = await defer.gatherResults([
                runner.run(["sha256sum", dev], timeout=1800)
                for runner, dev in ((source, device), (dest, other))])
            verified = sums[0].split()[0] == sums[1].split()[0]
        return {
            "servers": [source.host, dest.host],
            "size_bytes": size,
            "fill_s": round(fill, 2),
            "whole": {"bytes": whole, "seconds": round(whole_s, 2),
                      "mib_per_s": round(whole / MiB / whole_s, 1)},
            "changed_bytes": changed,
            "changed_fraction": round(changed / size, 4),
            "increment": {"bytes": increment, "seconds": round(increment_s, 2),
                          "mib_per_s": round(increment / MiB / increment_s, 1)},
            "sent_per_changed": round(increment / changed, 4),
            "increment_vs_whole_time": round(increment_s / whole_s, 3),
            "verified": verified,
        }
    finally:
        for runner, (zfs, top) in zip((source, dest), made):
            await runner.run(["zfs", "destroy", "-r", top], timeout=600).addErrback(
                lambda f: print(f"cleanup of {top} failed: {f.value}"))
        await source.stop()
        await dest.stop()
        shutil.rmtree(control, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "testbed", "state", "comet.toml"))
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--changed", type=float, default=0.05)
    parser.add_argument("--no-verify", dest="verify", action="store_false")
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results",
                                                       "zfs_send.json"))
    args = parser.parse_args()
    if not os.path.exists(args.config):
        print(f"skipped: no testbed configuration at {args.config} (testbed/stack up)")
        return 0
    config = load(args.config)
    if len(config.storageservers) < 2:
        print(f"skipped: {args.config} has fewer than two storage servers")
        return 0
    for server in config.storageservers[:2]:
        probe = subprocess.run(
            ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
             "-o", f"UserKnownHostsFile={server.ssh_known_hosts}", "-i", server.ssh_identity,
             "-l", server.ssh_user, "-p", str(server.ssh_port), server.host, "true"],
            capture_output=True,
        )
        if probe.returncode != 0:
            print(f"skipped: storage server {server.host} does not answer"
                  f" ({probe.stderr.decode(errors='replace').strip()})")
            return 0

    async def go(reactor):
        result = await measure(reactor, args, config)
        report(result, args.json)

    task.react(lambda reactor: defer.ensureDeferred(go(reactor)))
    return 0  # not reached: react exits


def report(r: dict, path: str) -> None:
    size = r["size_bytes"] // MiB
    lines = [
        f"zvol of {size} MiB (random data, filled in {r['fill_s']} s),"
        f" {r['servers'][0]} -> {r['servers'][1]} through Comet",
        f"{'copy':<34} {'bytes':>12} {'seconds':>8} {'MiB/s':>7}",
        f"{'whole':<34} {r['whole']['bytes']:>12} {r['whole']['seconds']:>8}"
        f" {r['whole']['mib_per_s']:>7}",
        f"{'incremental, ' + format(r['changed_fraction'], '.1%') + ' changed':<34}"
        f" {r['increment']['bytes']:>12} {r['increment']['seconds']:>8}"
        f" {r['increment']['mib_per_s']:>7}",
        f"bytes sent / bytes changed: {r['sent_per_changed']} (goal <= 1.05);"
        f" incremental / whole time: {r['increment_vs_whole_time']}",
        f"destination equals source (sha256): {r['verified']}",
    ]
    save(r, "\n".join(lines), path)


if __name__ == "__main__":
    sys.exit(main())
