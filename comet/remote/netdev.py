"""
A compute host's network devices for clusters' private networks: one Linux
bridge per cluster (C{cometb<VNI>}) and one VXLAN device (C{cometv<VNI>})
enslaved to it, run as argument lists through the host's L{IRunner} (the
same OpenSSH runner as the storage servers).

The VXLAN device sends the flooded frames (broadcast, unknown unicast: ARP)
to every other host's tunnel address, one all-zeros FDB entry per peer
(head-end replication), and learns where each guest MAC lives from the
frames it receives: no multicast group, which a plain Linux bridge between
hosts (the testbed's) does not carry reliably, and no per-VM FDB entries to
keep up to date.  Every peer is listed, not only the hosts that run the
cluster now: a host without the cluster's VNI drops the frames, and a VM
that starts or migrates elsewhere changes nothing on the other hosts.

Every change first reads the devices (C{ip -j -d link show}) and does only
what is missing, so each step can be run again after a crash.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Sequence

import attrs

from comet.errors import InvalidInput
from comet.remote.tgt import ParseError

#: IANA's VXLAN port.
VXLAN_PORT = 4789

#: Comet's device names: C{cometb<VNI>} (bridge) and C{cometv<VNI>} (VXLAN).
_COMET_DEVICE = re.compile(r"^comet([bv])([0-9]{1,8})$")


def private_bridge(vni: int) -> str:
    """The name of a cluster's bridge on a host: one per VNI, so per cluster."""
    return f"cometb{vni}"


def vxlan_device(vni: int) -> str:
    """The name of the VXLAN device that joins a cluster's bridges across hosts."""
    return f"cometv{vni}"


@attrs.frozen
class Device:
    """One of Comet's devices on a host, as C{ip -j -d link show} reports it."""

    name: str
    #: C{bridge} or C{vxlan} (what its name says it should be).
    role: str
    vni: int
    #: The kernel's kind (C{bridge}, C{vxlan}, ...), C{""} if not reported.
    kind: str
    #: The bridge it is enslaved to, C{None} if none.
    master: str | None
    up: bool


def _check_vni(vni: int) -> int:
    if not isinstance(vni, int) or isinstance(vni, bool) or not 1 <= vni <= 16777215:
        raise InvalidInput(f"{vni!r} is not a VXLAN network identifier (1-16777215)")
    return vni


def _check_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise InvalidInput(f"{address!r} is not an IP address") from None


def list_argv() -> list[str]:
    return ["ip", "-j", "-d", "link", "show"]


def parse_devices(output: bytes | str) -> dict[str, Device]:
    """
    Comet's devices (by name) in C{ip -j -d link show}'s output; other
    devices are left out.

    @raise ParseError: the output is not that command's JSON.
    """
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    try:
        links = json.loads(text or "[]")
    except ValueError:
        raise ParseError(f"not ip's JSON: {text[:60]!r}") from None
    if not isinstance(links, list):
        raise ParseError(f"not a list of links: {text[:60]!r}")
    devices = {}
    for link in links:
        if not isinstance(link, dict):
            raise ParseError(f"not a link: {link!r:.60}")
        name = link.get("ifname", "")
        match = _COMET_DEVICE.fullmatch(name) if isinstance(name, str) else None
        if match is None:
            continue
        info = link.get("linkinfo") or {}
        devices[name] = Device(
            name=name,
            role="bridge" if match[1] == "b" else "vxlan",
            vni=int(match[2]),
            kind=info.get("info_kind", ""),
            master=link.get("master"),
            up="UP" in link.get("flags", ()),
        )
    return devices


class HostNetwork:
    """
    The private-network devices of one compute host.

    @param runner: the host's L{comet.remote.IRunner}.
    @param local: this host's tunnel address (C{[[hosts]] tunnel_address}).
    @param peers: the other hosts' tunnel addresses.
    """

    def __init__(self, runner, local: str, peers: Sequence[str]):
        self.runner = runner
        self.local = _check_address(local)
        self.peers = tuple(_check_address(p) for p in peers if p != local)

    async def devices(self) -> dict[str, Device]:
        """Comet's devices on the host now, by name."""
        return parse_devices(await self.runner.run(list_argv()))

    async def vnis(self) -> set[int]:
        """The VNIs the host has a bridge or a VXLAN device of."""
        return {d.vni for d in (await self.devices()).values()}

    async def add_bridge(self, vni: int) -> bool:
        """The cluster's bridge, up; whether it had to be made."""
        name = private_bridge(_check_vni(vni))
        device = (await self.devices()).get(name)
        if device is None:
            await self.runner.run(["ip", "link", "add", name, "type", "bridge"])
        if device is None or not device.up:
            await self.runner.run(["ip", "link", "set", name, "up"])
        return device is None

    async def add_tunnel(self, vni: int) -> bool:
        """
        The cluster's VXLAN device (flooding to every peer), in its bridge,
        up; whether it had to be made.  A device of that name left half-made
        (no peers yet) is deleted and made again.
        """
        name, bridge = vxlan_device(_check_vni(vni)), private_bridge(vni)
        device = (await self.devices()).get(name)
        if device is not None and device.master == bridge and device.up:
            return False
        if device is not None:
            await self.runner.run(["ip", "link", "del", name])
        await self.runner.run(["ip", "link", "add", name, "type", "vxlan", "id", str(vni),
                               "local", self.local, "dstport", str(VXLAN_PORT)])
        for peer in self.peers:
            await self.runner.run(["bridge", "fdb", "append", "00:00:00:00:00:00",
                                   "dev", name, "dst", peer])
        # Enslaved and up last: up and in its bridge only once complete.
        await self.runner.run(["ip", "link", "set", name, "master", bridge, "up"])
        return True

    async def remove(self, vni: int, role: str) -> bool:
        """Delete the cluster's C{role} (C{bridge} or C{vxlan}) device; whether there was one."""
        name = private_bridge(vni) if role == "bridge" else vxlan_device(_check_vni(vni))
        if name not in await self.devices():
            return False
        await self.runner.run(["ip", "link", "del", name])
        return True
