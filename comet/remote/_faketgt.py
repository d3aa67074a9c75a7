"""
The tgt half of L{comet.remote.FakeStorageServer}: C{tgtadm} over its
targets and accounts, and the C{--op show} output.
"""

from __future__ import annotations

import re

from comet.remote._fake import Answer
from comet.remote._fakerecords import _Error, _Target


class _FakeTGT:
    """
    Mixed into L{FakeStorageServer}, whose constructor makes the state
    these methods share with the ZFS half (C{targets}, C{accounts}, and the
    volumes a LUN exports).
    """

    # tgt

    def _tgtadm(self, args: list[str]) -> Answer:
        opts: dict[str, str | bool] = {}
        i = 0
        while i < len(args):
            if args[i] in ("--force", "--outgoing"):
                opts[args[i][2:]] = True
                i += 1
            else:
                opts[args[i][2:]] = args[i + 1]
                i += 2
        try:
            return self._tgt(opts.get("mode"), opts.get("op"), opts)
        except _Error as e:
            return Answer(code=22, stderr=f"tgtadm: {e.answer.stderr}")

    def _target(self, opts) -> _Target:
        target = self.targets.get(int(opts.get("tid", 0)))
        if target is None:
            raise _Error("can't find the target")
        return target

    def _tgt(self, mode, op, opts) -> Answer:
        if (mode, op) == ("target", "show"):
            return Answer(stdout=self._show().encode())
        if (mode, op) == ("target", "new"):
            tid, name = int(opts["tid"]), str(opts["targetname"])
            if not re.fullmatch(r"[a-zA-Z0-9.:-]+", name) or tid < 1:
                raise _Error("invalid request")
            if tid in self.targets or any(t.iqn == name for t in self.targets.values()):
                raise _Error("this target already exists")
            self.targets[tid] = _Target(tid, name)
            return Answer()
        if (mode, op) == ("target", "delete"):
            target = self._target(opts)
            if target.connections and not opts.get("force"):
                raise _Error("this target is still active")
            del self.targets[target.tid]
            return Answer()
        if (mode, op) == ("target", "bind"):
            self._target(opts).acl.append(str(opts["initiator-address"]))
            return Answer()
        if (mode, op) == ("target", "unbind"):
            target, address = self._target(opts), str(opts["initiator-address"])
            if address not in target.acl:
                raise _Error("can't find the target")
            target.acl.remove(address)
            return Answer()
        if (mode, op) == ("logicalunit", "new"):
            target = self._target(opts)
            lun, path = int(opts["lun"]), str(opts["backing-store"])
            if lun in target.luns:
                raise _Error("this logical unit number already exists")
            if path not in {f"/dev/zd{m}" for m in self.devices.values()}:
                raise _Error("invalid request")
            target.luns[lun] = path
            return Answer()
        if (mode, op) == ("account", "show"):
            return Answer(stdout=("Account list:\n" + "".join(
                f"    {u}\n" for u in reversed(list(self.accounts)))).encode())
        if (mode, op) == ("account", "new"):
            user = str(opts["user"])
            if user in self.accounts:
                raise _Error("this account already exists")
            self.accounts[user] = str(opts["password"])
            return Answer()
        if (mode, op) == ("account", "bind"):
            target = self._target(opts)
            user = str(opts["user"])
            if user not in self.accounts:
                raise _Error("can't find the account")
            (target.outgoing if opts.get("outgoing") else target.accounts).append(user)
            return Answer()
        if (mode, op) == ("account", "delete"):
            user = str(opts["user"])
            if user not in self.accounts:
                raise _Error("can't find the account")
            del self.accounts[user]
            for target in self.targets.values():
                for where in (target.accounts, target.outgoing):
                    if user in where:
                        where.remove(user)
            return Answer()
        raise _Error("invalid request")

    def _show(self) -> str:
        out = []
        for tid in sorted(self.targets):
            t = self.targets[tid]
            out.append(f"Target {tid}: {t.iqn}\n    System information:\n"
                       "        Driver: iscsi\n        State: ready\n"
                       "    I_T nexus information:\n")
            for n, (initiator, address) in enumerate(t.connections, 1):
                out.append(f"        I_T nexus: {n}\n"
                           f"            Initiator: {initiator} alias: none\n"
                           "            Connection: 0\n"
                           f"                IP Address: {address}\n")
            out.append("    LUN information:\n")
            for lun, path in [(0, None)] + sorted(t.luns.items()):
                size = 0
                if path is not None:
                    size = self._volume_at(path).volsize // 1000000
                out.append(
                    f"        LUN: {lun}\n"
                    f"            Type: {'controller' if path is None else 'disk'}\n"
                    f"            SCSI ID: IET     {tid:04x}{lun:04x}\n"
                    f"            SCSI SN: beaf{tid}{lun}\n"
                    f"            Size: {size} MB, Block size: {1 if path is None else 512}\n"
                    "            Online: Yes\n            Removable media: No\n"
                    "            Prevent removal: No\n            Readonly: No\n"
                    "            SWP: No\n            Thin-provisioning: No\n"
                    f"            Backing store type: {'null' if path is None else 'rdwr'}\n"
                    f"            Backing store path: {path or 'None'}\n"
                    "            Backing store flags: \n")
            out.append("    Account information:\n")
            out += [f"        {a}\n" for a in t.accounts]
            out += [f"        {a} (outgoing)\n" for a in t.outgoing]
            out.append("    ACL information:\n")
            out += [f"        {a}\n" for a in t.acl]
        return "".join(out)
