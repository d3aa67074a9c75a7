"""
One compute host's connection as L{comet.virt.Hypervisors} holds it: the
libvirt connection its events and close notification are registered on, and
the extra connections opened so that calls can run side by side, each
C{virConnect} serving one call at a time.

Why one call at a time: libvirt's RPC client (9.0, Debian 12) lets threads
share a connection by passing "the buck": the thread that holds it runs the
connection's private GLib loop with a socket watch whose data lives on that
thread's stack.  When that loop is ended by someone else (a second thread's
call, a keepalive ping from the event-loop thread, a close), the watch stays
attached after the thread has left, and the next thread to run the loop
dispatches it with a pointer into a dead stack frame: a general-protection
fault in C{g_main_loop_quit}/C{g_mutex_lock}.  A host that stops answering
(frozen past the keepalive) and comes back, with calls queued on its
connection, did exactly that to the daemon (issue 17).  A thread alone on its
connection always leaves the loop through its own watch (the reply), or on
an error that closes the socket, so no watch outlives it.

libvirt's test driver (C{test:///...}) runs in this process without an RPC
client; its connections are shared, as each opening of a node file would
otherwise be a host of its own.
"""

from __future__ import annotations

import functools
from typing import Any

import attrs
import libvirt


def exclusive_uri(uri: str) -> bool:
    """Whether connections to C{uri} go through libvirt's RPC client (one call each at a time)."""
    return not uri.startswith("test:")


@attrs.define(eq=False)
class _Connection:
    """
    An open connection (C{conn}, with the lifecycle callback C{event_id} and
    the close callback registered on it) and the calls running on it now: it
    is closed only once none is (closing a C{virConnect} while another thread
    is inside a call on it is not safe), and only once.
    """

    conn: Any
    event_id: int | None
    #: Where it goes (the spares are opened there).
    uri: str = ""
    #: Whether each C{virConnect} may serve one call at a time (L{exclusive_uri}).
    exclusive: bool = False
    running: int = 0
    close_when_idle: Any = None
    #: Set once Comet gave the connection up: no call begins on it any more.
    dropped: bool = False
    #: The L{Deferred} of its closing, once asked for (it is closed once).
    closed: Any = None
    #: The connections free for a call now (the first one among them).
    idle: list = attrs.Factory(list)
    #: The extra connections opened for calls side by side (closed with it).
    spares: list = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        self.idle.append(self.conn)

    def take(self) -> _Lease:
        """A connection for one call, its own until L{give_back}."""
        if not self.exclusive:
            return _Lease(self.conn)
        return _Lease(self.idle.pop() if self.idle else None)

    def give_back(self, lease: _Lease) -> None:
        """The call of C{lease} has returned (in the reactor thread)."""
        if lease.opened:
            self.spares.append(lease.conn)
        if self.exclusive and lease.conn is not None:
            self.idle.append(lease.conn)


@attrs.define(eq=False)
class _Lease:
    """
    The C{virConnect} one call runs on; C{None} until the call's thread has
    opened a spare one (C{opened}), when none was free.
    """

    conn: Any
    opened: bool = False


def optional(method, *args) -> None:
    """Call a libvirt method that some drivers lack (keepalive on local ones)."""
    try:
        method(*args)
    except libvirt.libvirtError as e:
        if e.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
            raise


def close(connection: _Connection) -> None:
    """
    Run in a pool thread once no call runs on C{connection}: deregister the
    callbacks, then close it and its spares.
    """
    conn = connection.conn
    steps = [conn.unregisterCloseCallback, conn.close]
    if connection.event_id is not None:
        steps.insert(0, functools.partial(conn.domainEventDeregisterAny, connection.event_id))
    steps.extend(spare.close for spare in connection.spares)
    for step in steps:
        try:
            step()
        except libvirt.libvirtError:
            pass
