"""
Capture the real outputs that the parsers' tests read, from a testbed storage
server, into C{tests/remote/data/}.

    .venv/bin/python -m tests.remote.capture_fixtures [10.200.0.21]

Needs the testbed up (C{testbed/stack status}); uses its ssh key and
known_hosts from C{testbed/state/comet.toml}.  It works only inside its own
dataset C{tank/comet-test-capture} (made, then destroyed) plus one tgt target
and account of its own, so it can run while other work uses the server.  Each
fixture is the exact standard output (C{.out}) or standard error (C{.err}) of
the command that C{data/manifest.json} records for it (with its exit
status and server).  The manifest also lists, in order, the commands that
made the state (entries without a file), so that a test can replay the whole
session against L{comet.remote.FakeStorageServer} and compare answers; entries whose C{server} is C{dev-host} were captured
from the tgtd of the development machine (the same tgt 1.0.85 the storage
servers run), with a libiscsi initiator logged in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from comet.config import load
from comet.remote import remote_command
from comet.remote import tgt, zfs

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
ROOT = os.path.dirname(os.path.dirname(HERE))
TOP = "tank/comet-test-capture"
OWNER = {"comet:owner": "capture"}


class Server:
    def __init__(self, host: str):
        config = load(os.path.join(ROOT, "testbed/state/comet.toml"))
        self.server = next(s for s in config.storageservers if s.host == host)
        self.manifest: list[str] = []

    def run(self, argv, stdin: bytes | None = None, check: bool = True, record: bool = True):
        s = self.server
        ssh = ["/usr/bin/ssh", "-F", "/dev/null", "-T", "-o", "BatchMode=yes",
               "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={s.ssh_known_hosts}",
               "-i", s.ssh_identity, "-o", "IdentitiesOnly=yes", "-p", str(s.ssh_port),
               "-l", s.ssh_user, "--", s.host, remote_command(argv)]
        p = subprocess.run(ssh, input=stdin or b"", capture_output=True)
        if record:
            entry = {"file": None, "exit": p.returncode, "server": s.host, "argv": list(argv)}
            if stdin:
                entry["stdin"] = stdin.decode()
            self.manifest.append(entry)
        if check and p.returncode != 0:
            raise RuntimeError(f"{argv}: exit {p.returncode}: {p.stderr.decode()}")
        return p

    def capture(self, name: str, argv, stream: str = "out", stdin: bytes | None = None):
        p = self.run(argv, stdin=stdin, check=(stream == "out"))
        data = p.stdout if stream == "out" else p.stderr
        path = os.path.join(DATA, f"{name}.{stream}")
        with open(path, "wb") as f:
            f.write(data)
        self.manifest[-1]["file"] = f"{name}.{stream}"
        return p


def main(host: str = "10.200.0.21") -> None:
    s = Server(host)
    s.run(["zfs", "destroy", "-R", TOP], check=False, record=False)
    try:
        capture(s)
    finally:
        s.run(["zfs", "destroy", "-R", TOP], check=False, record=False)
    path = os.path.join(DATA, "manifest.json")
    with open(path) as f:
        manifest = [e for e in json.load(f) if e.get("server") != host]
    with open(path, "w") as f:
        json.dump(manifest + s.manifest, f, indent=1)
        f.write("\n")


def capture(s: Server) -> None:
    M = 1024 * 1024
    s.run(zfs.create_dataset_argv(TOP, OWNER))
    s.run(zfs.create_volume_argv(f"{TOP}/v1", 64 * M, OWNER))
    s.run(zfs.create_volume_argv(f"{TOP}/v2", 32 * M + 1, OWNER, sparse=True))
    s.run(zfs.create_volume_argv(f"{TOP}/foreign", 16 * M, {}, sparse=True))
    dev = s.run(zfs.device_argv(f"{TOP}/v1")).stdout.decode().strip()
    s.run(["dd", "if=/dev/urandom", f"of={dev}", "bs=1M", "count=4", "conv=fsync"])
    s.run(zfs.snapshot_argv([f"{TOP}/v1", f"{TOP}/v2"], "s1", OWNER))
    s.run(["dd", "if=/dev/urandom", f"of={dev}", "bs=1M", "count=2", "conv=fsync"])
    s.run(zfs.snapshot_argv([f"{TOP}/v1"], "s2", OWNER))
    s.run(zfs.clone_argv(f"{TOP}/v1@s1", f"{TOP}/c1", OWNER))

    s.capture("zfs-list-volumes", zfs.list_volumes_argv(TOP))
    s.capture("zfs-list-volume", zfs.get_volume_argv(f"{TOP}/c1"))
    s.capture("zfs-list-snapshots", zfs.list_snapshots_argv(f"{TOP}/v1"))
    s.capture("zfs-get-owner-recursive", zfs.get_argv([TOP], [zfs.OWNER_PROPERTY], recursive=True))
    s.capture("zfs-get-space", zfs.get_argv([TOP], ["used", "available", "referenced"]))
    s.capture("zpool-list", zfs.pool_list_argv())
    s.capture("zvol-devices", zfs.devices_argv())
    s.capture("zvol-device", zfs.device_argv(f"{TOP}/v2", 2))
    s.capture("zvol-device-missing", zfs.device_argv(f"{TOP}/nope", 0), "err")

    s.capture("zfs-create-exists", zfs.create_volume_argv(f"{TOP}/v1", M), "err")
    s.capture("zfs-create-no-parent", zfs.create_volume_argv(f"{TOP}/nope/v", M), "err")
    s.capture("zfs-create-no-space", zfs.create_volume_argv(f"{TOP}/big", 64 * 1024 * M), "err")
    s.capture("zfs-create-bad-size", ["zfs", "create", "-V", "1000", "-o", "volblocksize=16384",
                                      f"{TOP}/odd"], "err")
    s.capture("zfs-get-odd-volsize", zfs.get_argv([f"{TOP}/odd"], ["volsize"]))
    s.capture("zfs-list-missing", zfs.list_volumes_argv(f"{TOP}/nope"), "err")
    s.capture("zfs-destroy-children", zfs.destroy_argv(f"{TOP}/v2"), "err")
    s.capture("zfs-destroy-clones", zfs.destroy_argv(f"{TOP}/v1@s1"), "err")
    s.capture("zfs-destroy-recursive-clones", zfs.destroy_argv(f"{TOP}/v1", True), "err")
    s.capture("zfs-destroy-missing", zfs.destroy_argv(f"{TOP}/nope"), "err")
    s.capture("zfs-snapshot-exists", zfs.snapshot_argv([f"{TOP}/v1", f"{TOP}/v2"], "s1"), "err")
    s.capture("zfs-snapshot-missing", zfs.snapshot_argv([f"{TOP}/nope"], "s1"), "err")
    s.capture("zfs-rollback-newer", zfs.rollback_argv(f"{TOP}/v1@s1"), "err")
    s.capture("zfs-promote-not-clone", zfs.promote_argv(f"{TOP}/v1"), "err")
    s.capture("zfs-rename-exists", zfs.rename_argv(f"{TOP}/v2", f"{TOP}/v1"), "err")
    s.capture("zfs-clone-missing", zfs.clone_argv(f"{TOP}/v1@nope", f"{TOP}/c2"), "err")

    # tgt: one target backed by v1's device, CHAP, bound to every initiator.
    shown = s.run(tgt.show_argv()).stdout
    tid = tgt.free_tid(tgt.parse_targets(shown))
    iqn = "iqn.2026-11.org.comet:capture.v1"
    s.run(tgt.new_target_argv(tid, iqn))
    s.run(tgt.new_lun_argv(tid, 1, dev))
    s.run(tgt.bind_address_argv(tid, "ALL"))
    s.run(tgt.new_account_argv("capture-v1"), stdin=b"capture-secret-1\n")
    s.run(tgt.bind_account_argv(tid, "capture-v1"))
    try:
        s.capture("tgt-show", tgt.show_argv())
        s.capture("tgt-accounts", tgt.accounts_argv())
        s.capture("tgt-new-exists", tgt.new_target_argv(tid, iqn), "err")
        s.capture("tgt-new-underscore", tgt.new_target_argv(tid + 1, iqn + "-x")[:-1]
                  + [iqn + "_x"], "err")
        s.capture("tgt-lun-missing-device", tgt.new_lun_argv(tid, 2, "/dev/zd99999"), "err")
        s.capture("tgt-delete-missing", tgt.delete_target_argv(999), "err")
        s.capture("tgt-account-exists", tgt.new_account_argv("capture-v1"), "err",
                  stdin=b"capture-secret-1\n")
    finally:
        s.run(tgt.delete_target_argv(tid), check=False)
        s.run(tgt.delete_account_argv("capture-v1"), check=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
