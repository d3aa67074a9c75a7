"""
VMs' network interfaces: what a NIC asks for, how its MAC is made, which
bridge it joins.

A NIC is on a I{network}: C{private} (the cluster's own layer-2 network, a
bridge per cluster on each host joined across hosts by VXLAN:
L{comet.model.networks}) or a name a host offers a bridge for
(C{[[hosts]] bridges = {public = "br0"}}).  Its MAC is given or derived from
the VM's uuid and the NIC's index, so a VM keeps its MACs across stops,
starts, migrations and restarts of the daemon; the store keeps every MAC
unique within Comet.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable

import attrs

from comet.errors import Conflict, InvalidInput, NotFound
from comet.names import PRIVATE_NETWORK, check_name
from comet.remote.netdev import private_bridge

#: The network name of a cluster's own private network.
PRIVATE = PRIVATE_NETWORK

#: NICs a VM may have (PCI slots and the guest's patience are finite).
MAX_NICS = 8

#: The prefix of every derived MAC: QEMU's locally administered OUI, the one
#: libvirt itself gives interfaces without a MAC.
DERIVED_PREFIX = "52:54:00"

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def guest_device(index: int) -> str:
    """
    The name a guest without renaming rules gives the NIC: virtio-net
    devices are probed in PCI order, which is the order of the NICs in the
    domain XML.  (A distribution with predictable names calls it C{ens…}.)
    """
    return f"eth{index}"


def normalize_mac(mac: object) -> str:
    """
    C{mac} in lower case; L{InvalidInput} unless it is six colon-separated
    hex octets of a unicast address (a multicast MAC cannot be a NIC's).
    """
    if not isinstance(mac, str) or not _MAC.fullmatch(mac.lower()):
        raise InvalidInput(f"MAC {mac!r} is invalid: it must be six octets like 52:54:00:12:34:56")
    mac = mac.lower()
    if int(mac[:2], 16) & 1:
        raise InvalidInput(f"MAC {mac!r} is a multicast address; a NIC needs a unicast one")
    if mac == "00:00:00:00:00:00":
        raise Conflict("MAC 00:00:00:00:00:00 is reserved; it cannot be a NIC's")
    return mac


def derived_mac(uuid: str, index: int, attempt: int = 0) -> str:
    """
    The MAC of a VM's NIC that was given none: stable (the same VM and index
    give the same MAC); C{attempt} > 0 gives others, for the rare clash with
    a MAC already taken (the store tries the next).
    """
    digest = hashlib.sha256(f"{uuid}/{index}/{attempt}".encode()).digest()
    return DERIVED_PREFIX + "".join(f":{b:02x}" for b in digest[:3])


@attrs.frozen
class NicRequest:
    """A NIC as a client asked for it: its network, and its MAC if it gave one."""

    network: str
    mac: str | None = None


def check_nic(nic: object, networks: Iterable[str], *, macs: bool = True,
              where: str = "") -> NicRequest:
    """
    One NIC of a request body, checked: C{{"network": NAME, "mac"?: MAC}},
    its network C{private} or one of C{networks} (those some host offers),
    its MAC valid.  C{where} (C{"nics[0]"}) begins each refusal.

    @raise InvalidInput: a malformed NIC or MAC (the request schema says so
        too), or a MAC with C{macs=False} (a template's NIC).
    @raise NotFound: a network no host offers.
    @raise Conflict: a reserved MAC.
    """
    if not isinstance(nic, dict) or not set(nic) <= {"network", "mac"} or "network" not in nic:
        raise InvalidInput(f"{where or 'a NIC'} must be an object with network and optionally mac")
    network = nic["network"]
    where = f"{where}: " if where else ""
    known = set(networks)
    if network != PRIVATE and not check_name(network):
        raise InvalidInput(f"{where}{network!r} is not a network name")
    if network != PRIVATE and network not in known:
        offered = ", ".join(sorted(known | {PRIVATE}))
        raise NotFound(f"{where}network {network!r} is not one of: {offered}")
    mac = nic.get("mac")
    if mac is not None:
        if not macs:
            raise InvalidInput(
                f"{where}a template's NIC cannot have a MAC (every VM made from it"
                " would share it)")
        mac = normalize_mac(mac)
    return NicRequest(network, mac)


def check_nics(nics: object, networks: Iterable[str], *, macs: bool = True
               ) -> tuple[NicRequest, ...]:
    """
    The NICs of a request body, checked: C{nics} is a list of
    C{{"network": NAME, "mac"?: MAC}}, each as L{check_nic} has it, MACs
    not repeated.  C{macs=False} (a template, which many VMs are made from)
    refuses MACs.

    @raise InvalidInput: a malformed NIC or MAC (the request schema says so
        too).
    @raise NotFound: a network no host offers.
    @raise Conflict: a reserved MAC, or two NICs with one MAC.
    """
    if not isinstance(nics, list):
        raise InvalidInput("nics must be a list")
    if len(nics) > MAX_NICS:
        raise InvalidInput(f"a VM has at most {MAX_NICS} NICs, not {len(nics)}")
    known = set(networks)
    checked = tuple(check_nic(nic, known, macs=macs, where=f"nics[{i}]")
                    for i, nic in enumerate(nics))
    given = [n.mac for n in checked if n.mac is not None]
    if len(set(given)) != len(given):
        raise Conflict("two NICs have the same MAC")
    return checked


def networks_of(nics) -> frozenset[str]:
    """The networks a VM's NICs (L{comet.store.NicRecord}s) are on: what its host must offer."""
    return frozenset(nic.network for nic in nics)


def bridge(nic, vni: int | None, host_bridges: dict[str, str]) -> str | None:
    """
    The bridge C{nic} (a L{comet.store.NicRecord}) joins on a host offering
    C{host_bridges}: its cluster's for C{private} (C{vni}: the cluster's),
    else the host's bridge for the network; C{None} when there is none.
    """
    if nic.network == PRIVATE:
        return private_bridge(vni) if vni is not None else None
    return host_bridges.get(nic.network)


def nic_views(record, host_bridges: dict[str, str]) -> list[dict]:
    """
    The NICs of VM C{record} as the API shows them: network, MAC, the bridge
    each joins on the VM's host (offering C{host_bridges}; C{None} for a
    network other than C{private} while it is placed nowhere) and the
    guest's name for it.
    """
    return [
        {"network": nic.network, "mac": nic.mac, "bridge": bridge(nic, record.vni, host_bridges),
         "device": guest_device(nic.index)}
        for nic in record.nics
    ]
