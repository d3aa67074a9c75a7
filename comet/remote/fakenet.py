"""
A fake compute host's network devices, beside the real ones (C{ip} and
C{bridge} in a network namespace: C{tests/remote/test_netdev.py} holds both
to the same behaviour): an L{comet.remote.IRunner} that answers the
commands L{comet.remote.netdev} runs, in the same formats, and fails the
way they do.
"""

from __future__ import annotations

import json

from twisted.internet.defer import fail, succeed

from comet.errors import CommandFailed, Unavailable
from comet.remote._command import check_argv


class FakeHostNetwork:
    """
    @ivar links: name -> dict of the link (C{kind}, C{up}, C{master},
        C{vni}, C{local}, C{fdb}: the flood destinations).
    @ivar ran: every argv run, in order.
    @ivar unavailable: set to a reason to make every command fail as an
        unreachable host.
    """

    def __init__(self, host: str):
        self.host = host
        self.links: dict[str, dict] = {}
        self.ran: list[list[str]] = []
        self.unavailable: str | None = None

    def run(self, argv, stdin=None, timeout=None):
        argv = check_argv(argv)
        self.ran.append(argv)
        if self.unavailable is not None:
            return fail(Unavailable(f"{self.host}: {self.unavailable}"))
        try:
            return succeed(self._run(argv).encode())
        except CommandFailed as e:
            return fail(e)

    def stop(self):
        return succeed(None)

    def _failed(self, argv, stderr: str):
        return CommandFailed(argv, 1 if argv[0] == "bridge" else 2, stderr, self.host)

    def _run(self, argv: list[str]) -> str:
        if argv == ["ip", "-j", "-d", "link", "show"]:
            return json.dumps([self._show(name, link) for name, link in self.links.items()])
        if argv[:3] == ["ip", "link", "add"] and argv[4:5] == ["type"]:
            name, kind = argv[3], argv[5]
            if name in self.links:
                raise self._failed(argv, "RTNETLINK answers: File exists")
            link = {"kind": kind, "up": False, "master": None, "fdb": []}
            if kind == "vxlan":
                options = dict(zip(argv[6::2], argv[7::2]))
                link.update(vni=int(options["id"]), local=options["local"])
            elif kind != "bridge":
                raise self._failed(argv, "Error: Unknown device type.")
            self.links[name] = link
            return ""
        if argv[:3] == ["ip", "link", "set"]:
            link = self._link(argv, argv[3])
            rest = argv[4:]
            if rest[:1] == ["master"]:
                master = self.links.get(rest[1])
                if master is None or master["kind"] != "bridge":
                    raise self._failed(argv, f'Cannot find device "{rest[1]}"')
                link["master"] = rest[1]
                rest = rest[2:]
            if rest == ["up"]:
                link["up"] = True
            return ""
        if argv[:3] == ["ip", "link", "del"]:
            self._link(argv, argv[3])
            del self.links[argv[3]]
            for link in self.links.values():
                if link["master"] == argv[3]:
                    link["master"] = None
            return ""
        if argv[:3] == ["bridge", "fdb", "append"]:
            link = self._link(argv, argv[argv.index("dev") + 1])
            link["fdb"].append(argv[argv.index("dst") + 1])
            return ""
        raise self._failed(argv, "unknown command")

    def _link(self, argv, name: str) -> dict:
        link = self.links.get(name)
        if link is None:
            raise self._failed(argv, f'Cannot find device "{name}"')
        return link

    @staticmethod
    def _show(name: str, link: dict) -> dict:
        shown = {"ifname": name, "flags": ["BROADCAST", "MULTICAST"] + (
            ["UP", "LOWER_UP"] if link["up"] else [])}
        if link["master"] is not None:
            shown["master"] = link["master"]
        info: dict = {"info_kind": link["kind"]}
        if link["kind"] == "vxlan":
            info["info_data"] = {"id": link["vni"], "local": link["local"]}
        shown["linkinfo"] = info
        return shown
