"""
Consoles of running VMs: single-use tickets for the browser console.

C{GET .../console} asks L{ConsoleModel.issue} for a L{Ticket}: a random token
bound to one VM, valid once and for L{TICKET_TTL} seconds, with a fresh random
VNC password that has just been set live on the VM's display.  The websocket
that relays the VNC bytes calls L{ConsoleModel.consume} I{before} it opens any
connection to the VNC server, so a wrong, reused or expired token never
reaches it.
"""

from __future__ import annotations

import secrets
import string
from typing import Callable
from urllib.parse import urlsplit

import attrs
import libvirt

from comet.errors import CometError, Conflict, InvalidInput
from comet.model.vms import conflict
from comet.virt import HypervisorError

#: The kinds of console.
KINDS = ("vnc", "serial")

#: Seconds a ticket may wait to be used.
TICKET_TTL = 60.0
#: Seconds the VNC password of a ticket outlives the ticket (it must still be
#: good for the VNC handshake that follows a ticket used at its last moment,
#: and the compute host's clock may be a little behind ours).
PASSWORD_GRACE = 30.0

#: Characters of a VNC password (VNC uses at most 8; printable, URL-safe).
_PASSWORD_ALPHABET = string.ascii_letters + string.digits
PASSWORD_LENGTH = 8


class TicketRefused(CometError):
    """A console token that is unknown, already used, expired or for another VM."""


@attrs.frozen
class Ticket:
    token: str
    cluster: str
    name: str
    #: The VM's uuid: a renamed VM keeps its ticket, another VM of that name does not.
    uuid: str
    host: str
    domain: str
    #: The VNC password set live on the display for this ticket (C{None} for serial).
    password: str | None
    #: Clock seconds after which the ticket is refused.
    expires: float
    #: C{vnc} (the display) or C{serial} (the first serial port, as text).
    kind: str = "vnc"
    #: The libvirt URI of the VM's host.
    uri: str = ""


def random_password() -> str:
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def is_local(uri: str) -> bool:
    """Whether a libvirt URI names this machine (no host part: C{qemu:///system})."""
    return not urlsplit(uri).netloc


class ConsoleModel:
    """
    @param vms: the L{comet.model.vms.VMModel}.
    @param hypervisors: the libvirt adapter (C{set_vnc_password}, C{graphics_address}).
    @param hosts: the compute host configurations (their URIs say local or remote).
    @param clock: C{seconds()}.
    """

    def __init__(
        self,
        vms,
        hypervisors,
        hosts,
        clock,
        ttl: float = TICKET_TTL,
        token: Callable[[], str] = lambda: secrets.token_urlsafe(32),
        password: Callable[[], str] = random_password,
        max_session: float = 4 * 3600.0,
        max_message: int = 256 * 1024,
    ):
        self._vms = vms
        self._hv = hypervisors
        self._uris = {h.name: h.uri for h in hosts}
        self._clock = clock
        self._ttl = ttl
        self._token = token
        self._password = password
        self._tickets: dict[str, Ticket] = {}
        #: Seconds after which a console session is closed (0: never).
        self.max_session = max_session
        #: Largest websocket message (and frame) accepted from the browser.
        self.max_message = max_message

    def set_hosts(self, hosts) -> None:
        """The configured compute hosts are now C{hosts} (a configuration reload)."""
        self._uris = {h.name: h.uri for h in hosts}

    def _prune(self) -> None:
        now = self._clock.seconds()
        for token in [t for t, ticket in self._tickets.items() if ticket.expires <= now]:
            del self._tickets[token]

    async def issue(self, cluster: str, name: str, kind: str = "vnc") -> Ticket:
        """
        A new ticket for the console of a running (or paused) VM.  For its
        VNC display (C{kind} C{vnc}) the display gets a new random password,
        set live; its serial console (C{serial}) is reached through libvirt.

        @raise Conflict: the VM is not running or paused, or its host's
            libvirt driver cannot set a VNC password (libvirt's test driver:
            its guests have no display), so no VNC console can be had there.
        """
        if kind not in KINDS:
            raise InvalidInput(f"a console is one of {', '.join(KINDS)}, not {kind!r}")
        vm = await self._vms.get(cluster, name)
        if vm.phase not in ("running", "paused"):
            raise conflict(vm, "a console")
        host = vm.record.host
        uri = self._uris.get(host, "")
        password = None
        expires = self._clock.seconds() + self._ttl
        if kind == "vnc":
            password = self._password()
            try:
                # The password stops letting anyone in soon after the ticket
                # expires (libvirt's passwdValidTo; a session already open stays).
                await self._hv.set_vnc_password(
                    host, vm.record.domain_name, password, valid_to=expires + PASSWORD_GRACE
                )
            except HypervisorError as e:
                # A driver that lacks the call never will have it: not a
                # backend failure (502) but a VM whose host gives no console.
                if e.code != libvirt.VIR_ERR_NO_SUPPORT:
                    raise
                raise Conflict(
                    f"VM {vm.name!r} has no VNC console on host {host!r}: {e.reason}"
                ) from None
        self._prune()
        ticket = Ticket(
            token=self._token(),
            cluster=cluster,
            name=vm.name,
            uuid=vm.record.uuid,
            host=host,
            domain=vm.record.domain_name,
            password=password,
            expires=expires,
            kind=kind,
            uri=uri,
        )
        self._tickets[ticket.token] = ticket
        return ticket

    def consume(self, token: str, uuid: str | None = None) -> Ticket:
        """
        The ticket of C{token}, which is used up by this call.

        @param uuid: when given, the ticket must be for that VM.
        @raise TicketRefused: the token is unknown, used, expired, or for another VM.
        """
        ticket = self._tickets.pop(token, None)
        if ticket is None:
            raise TicketRefused("the console token is not valid (unknown or already used)")
        if self._clock.seconds() >= ticket.expires:
            raise TicketRefused("the console token has expired")
        if uuid is not None and ticket.uuid != uuid:
            raise TicketRefused("the console token is for another VM")
        return ticket

    async def address(self, ticket: Ticket) -> tuple[str, int]:
        """
        Where the ticket's VNC display listens: on this machine for a local
        host, else on the remote host (where C{ssh -W} reaches it).
        """
        graphics = await self._hv.graphics_address(ticket.host, ticket.domain)
        listen = graphics.listen
        if listen in ("0.0.0.0", "::", ""):
            listen = "127.0.0.1"
        return listen, graphics.port
