"""
An in-memory storage server: OpenZFS 2.1 zvols, snapshots and clones, and a
tgt 1.0.85 iSCSI target, answering exactly the commands that
L{comet.remote.zfs} and L{comet.remote.tgt} issue, with the output formats,
exit statuses and error messages the real tools give (the parsers' fixtures
in C{tests/remote/data/} are real captures of them).  Use it as the backend
of a L{comet.remote.FakeRunner}.

It is a model, not an emulator: space accounting is simplified (a volume
uses its reservation or the bytes written to it, whichever is larger;
snapshots use nothing), and only the options Comet uses are understood; any
other command fails with exit status 127, so a change in what Comet issues
shows up in the tests instead of passing silently.  The contract suite in
C{tests/contract/remote_suite.py} runs against both this and the real
servers, so the two cannot drift apart unnoticed.

Its ZFS half lives in L{comet.remote._fakezfs} (send and receive in
L{comet.remote._fakesend}), its tgt half in L{comet.remote._faketgt}, its
C{qemu-img} in L{comet.remote._fakeqemu}, what they hold in
L{comet.remote._fakerecords}.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from collections.abc import Callable

from comet.remote import tgt as _tgt
from comet.remote import zfs as _zfs
from comet.remote._fake import Answer
from comet.remote._fakeqemu import _FakeQemuImg
from comet.remote._fakerecords import _Dataset, _Error, _Target
from comet.remote._fakesend import _FakeSend
from comet.remote._faketgt import _FakeTGT
from comet.remote._fakezfs import _FakeZFS
from comet.remote.machine import BOOT_ID_PATH

__all__ = ["FakeStorageServer"]


class FakeStorageServer(_FakeZFS, _FakeSend, _FakeTGT, _FakeQemuImg):
    """
    One storage server's ZFS pools and tgt, in memory.

    @ivar pools: zpool name -> size (bytes).
    @ivar devices: volume name -> minor number of its C{/dev/zdN}.
    @ivar targets: tid -> target; C{accounts}: CHAP user -> password.
    @ivar now: a callable giving the time (seconds since the epoch) that
        C{creation} properties record.
    @ivar synced: how many times C{sync} ran.
    @ivar boot_id: the boot id it answers; L{reboot} makes a new one.
    @ivar commands: the commands on its PATH (C{command -v}).
    """

    def __init__(self, pools: dict[str, int] | None = None,
                 datasets: tuple[str, ...] = ("tank/comet",),
                 now: Callable[[], float] = time.time,
                 commands: tuple[str, ...] = ("gzip", "xz")):
        self.pools = dict(pools or {"tank": 2013265920})
        #: The optional commands it has (by default gzip and xz, no zstd, no
        #: qemu-img; the testbed's servers have qemu-img too), besides those
        #: every server has.
        self.commands = frozenset(commands) | {"sh", "dd", "head", "sync", "zfs", "tgtadm"}
        self.now = now
        self.datasets: dict[str, _Dataset] = {}
        self.devices: dict[str, int] = {}
        self.targets: dict[int, _Target] = {}
        self.accounts: dict[str, str] = {}
        self.synced = 0
        self.boot_id = str(uuid.uuid4())
        #: The pools a reboot left unimported (L{import_pools}), with their datasets.
        self._exported: tuple[dict, dict, list[str]] | None = None
        self._txg = 1
        self._next_minor = 0
        for pool in self.pools:
            self._add(pool, "filesystem")
        for name in datasets:
            self._add(name, "filesystem")

    # Helpers for tests

    def reimport(self) -> None:
        """Give every zvol a new minor number, as an import after a reboot may."""
        names = sorted(self.devices, reverse=True)
        self.devices = {}
        for name in names:
            self.devices[name] = self._next_minor
            self._next_minor += 16

    def reboot(self, import_pools: bool = True) -> None:
        """
        Boot again, as the real servers do: tgtd starts empty (every target
        and CHAP account is gone: tgt keeps them in memory only), the boot id
        changes, and the pools are imported, their zvols getting new minors
        (L{reimport}).  With C{import_pools=False} the pools stay unimported
        (as on a server whose import has not run yet) until L{import_pools}:
        no dataset, no zvol device, C{zpool list} empty.
        """
        self.targets = {}
        self.accounts = {}
        self.boot_id = str(uuid.uuid4())
        if import_pools:
            self.reimport()
            return
        if self._exported is None:
            self._exported = (self.pools, self.datasets, sorted(self.devices))
            self.pools, self.datasets, self.devices = {}, {}, {}

    def import_pools(self) -> None:
        """Import the pools a L{reboot} left unimported (new minors)."""
        if self._exported is not None:
            self.pools, self.datasets, zvols = self._exported
            self._exported = None
            self.devices = {name: 0 for name in zvols}
            self.reimport()

    def connect(self, iqn: str, initiator: str, address: str,
                chap: tuple[str, str] | None = None) -> None:
        """
        Log initiator C{initiator} at C{address} in to target C{iqn}, with
        CHAP credentials C{(user, password)} if given.  As tgt does, the
        login is refused (L{PermissionError}) from an address the target's
        ACL does not admit, and without a right account when the target has
        CHAP accounts.
        """
        target = next(t for t in self.targets.values() if t.iqn == iqn)
        if not any(a == "ALL" or ipaddress.ip_address(address)
                   in ipaddress.ip_network(a, strict=False) for a in target.acl):
            raise PermissionError(f"{address} is not in the ACL of {iqn} ({target.acl})")
        if target.accounts:
            if chap is None or chap[0] not in target.accounts or self.accounts.get(chap[0]) != chap[1]:
                raise PermissionError(f"CHAP authentication to {iqn} failed")
        target.connections.append((initiator, address))

    def device(self, volume: str) -> str | None:
        minor = self.devices.get(volume)
        return None if minor is None else f"/dev/zd{minor}"

    # Answering

    def handle(self, argv: list[str], stdin: bytes | None) -> Answer:
        """Answer one command like the real server would."""
        try:
            if argv[:2] == ["zfs", "receive"]:
                return self._zfs_receive_stream(argv[2:], stdin or b"")
            if argv[:1] == ["zfs"] and len(argv) > 1:
                handler = getattr(self, f"_zfs_{argv[1]}", None)
                if handler is not None:
                    return handler(argv[2:])
            elif argv[:1] == ["zpool"] and argv[1:2] == ["list"]:
                return self._zpool_list(argv[2:])
            elif argv[:1] == ["tgtadm"]:
                return self._tgtadm(argv[1:])
            elif argv == ["sync"]:
                self.synced += 1
                return Answer()
            elif argv == ["cat", BOOT_ID_PATH]:
                return Answer(stdout=f"{self.boot_id}\n".encode())
            elif argv[:3] == ["sh", "-c", _zfs.DEVICES_SCRIPT]:
                return self._devices()
            elif argv[:3] == ["sh", "-c", _zfs.DEVICE_SCRIPT] and len(argv) == 6:
                return self._device(argv[4])
            elif argv[:3] == ["sh", "-c", _tgt.NEW_ACCOUNT_SCRIPT] and len(argv) == 5:
                password = (stdin or b"").split(b"\n")[0].decode()
                if not password:
                    return Answer(code=1)
                return self._tgtadm(["--lld", "iscsi", "--mode", "account", "--op", "new",
                                     "--user", argv[4], "--password", password])
            elif argv[:1] == ["dd"]:
                return self._dd(argv[1:], stdin or b"")
            elif argv[:3] == ["sh", "-c", _zfs.DECOMPRESS_SCRIPT] and len(argv) == 6:
                return self._decompress(argv[4], argv[5], stdin or b"")
            elif argv[:3] == ["sh", "-c", _zfs.HAS_COMMAND_SCRIPT] and len(argv) == 5:
                return Answer(code=0 if argv[4] in self.commands else 1)
            elif argv[:2] == ["head", "-c"] and len(argv) == 4:
                return self._head(int(argv[2]), argv[3])
            elif argv[:1] == ["qemu-img"]:
                return self._qemu_img(argv[1:])
        except _Error as e:
            return e.answer
        return Answer(code=127, stderr=f"sh: {argv[0]}: not found (fake storage server)")
