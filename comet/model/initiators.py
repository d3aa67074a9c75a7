"""
The address a compute host's iSCSI logins reach a storage server from.

A tgt target admits initiators by address as well as by CHAP account: bound
to the one compute host a volume is exported to, a leaked CHAP secret is of
no use from anywhere else.  The address is C{[[hosts]] storage_address} when
set; otherwise it is derived:

  - a host whose libvirt URI names a remote machine (C{qemu+ssh://root@h/system}):
    that machine's address (C{h}, resolved);
  - a local host (C{qemu:///system}): the source address this machine uses
    to reach the storage server, as the kernel's routing picks it (a UDP
    socket is "connected" to the server, which sends nothing, and asked its
    own address).  On the testbed that is the bridge address 10.200.0.1.

Set C{storage_address} when the storage network sees the host under another
address (NAT, a separate storage interface).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from twisted.internet.threads import deferToThread

from comet.errors import Unavailable


def _source_address(server: str) -> str:
    """The local address the routing table uses toward C{server} (blocks: a thread)."""
    family, _, _, _, sockaddr = socket.getaddrinfo(server, 3260, 0, socket.SOCK_DGRAM)[0]
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect(sockaddr)
        return s.getsockname()[0]


def _resolve(name: str) -> str:
    """C{name}'s first address (blocks: a thread)."""
    return socket.getaddrinfo(name, 3260, 0, socket.SOCK_STREAM)[0][4][0]


class Initiators:
    """
    Which initiator address each compute host's exports admit; derived
    addresses are looked up once (in a thread) and kept.

    @param hosts: the configured L{comet.config.HostConfig}s.
    """

    def __init__(self, hosts, lookup_thread=deferToThread):
        self._hosts = {h.name: h for h in hosts}
        self._known: dict[tuple[str, str], str] = {}
        self._thread = lookup_thread

    def set_hosts(self, hosts) -> None:
        """The configured hosts are now C{hosts} (a configuration reload)."""
        self._hosts = {h.name: h for h in hosts}
        self._known = {key: a for key, a in self._known.items() if key[0] in self._hosts}

    async def address(self, host: str, server: str) -> str:
        """
        The address the exports of C{server} to compute host C{host} admit.

        @raise Unavailable: it cannot be told (the message says to set
            C{storage_address}).
        """
        config = self._hosts.get(host)
        if config is not None and config.storage_address:
            return config.storage_address
        key = (host, server)
        if key not in self._known:
            remote = urlsplit(config.uri).hostname if config is not None else None
            try:
                if remote:
                    found = await self._thread(_resolve, remote)
                else:
                    found = await self._thread(_source_address, server)
                ipaddress.ip_address(found)
            except (OSError, ValueError, UnicodeError) as e:
                raise Unavailable(
                    f"cannot tell the address compute host {host!r} reaches storage server"
                    f" {server} from ({e}); set storage_address in its [[hosts]] table"
                ) from None
            self._known[key] = found
        return self._known[key]
