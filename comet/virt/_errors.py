"""
Libvirt's errors in Comet's words.

A C{libvirtError} carries a code and the subsystem (domain) that raised it.
Three kinds matter to a client: the thing is not there (L{NotFound}), it is in
the wrong state (L{Conflict}), or the host does not answer (L{Unavailable}, and
the adapter drops the connection).  Anything else is a L{HypervisorError} that
keeps libvirt's own message, which is usually what an operator needs ("Cannot
access storage file …").

Whether a connection is broken is judged from the error *and* from the
connection: libvirt reports a dead daemon as a system or internal error from
its RPC layer, while the same codes from a driver (QEMU failing to open a file)
say nothing about the connection.
"""

from __future__ import annotations

import libvirt

from comet.errors import BackendError, CometError, Conflict, InvalidInput, NotFound


class HypervisorError(BackendError):
    """
    A compute host answered, and refused for a reason that is neither a
    missing thing nor a wrong state (QEMU could not start, a feature the
    driver lacks).  The reason is libvirt's message.

    @ivar code: libvirt's error code (C{VIR_ERR_*}), or C{None}.
    """

    def __init__(self, reason: str, code: int | None = None):
        super().__init__(reason)
        self.code = code


class ConnectionLost(Exception):
    """
    Raised in a libvirt thread when the connection itself failed; the adapter
    turns it into L{comet.errors.Unavailable} and reconnects later.  Never
    seen outside L{comet.virt}.
    """

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


_NOT_FOUND = frozenset(
    getattr(libvirt, name)
    for name in (
        "VIR_ERR_NO_DOMAIN",
        "VIR_ERR_NO_SECRET",
        "VIR_ERR_NO_DOMAIN_SNAPSHOT",
        "VIR_ERR_NO_DOMAIN_METADATA",
        "VIR_ERR_NO_STORAGE_VOL",
        "VIR_ERR_NO_STORAGE_POOL",
    )
    if hasattr(libvirt, name)
)

_CONFLICT = frozenset(
    {
        libvirt.VIR_ERR_OPERATION_INVALID,
        libvirt.VIR_ERR_DOM_EXIST,
    }
)

_INVALID = frozenset(
    {
        libvirt.VIR_ERR_XML_ERROR,
        libvirt.VIR_ERR_XML_DETAIL,
        libvirt.VIR_ERR_XML_INVALID_SCHEMA,
        libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
    }
)

# Codes that mean the connection is gone, whoever raised them.
_BROKEN_ALWAYS = frozenset(
    {
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_INVALID_CONN,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_AUTH_FAILED,
        libvirt.VIR_ERR_AUTH_CANCELLED,
        libvirt.VIR_ERR_AUTH_UNAVAILABLE,
    }
)

# Codes that mean the connection is gone when the RPC layer raised them.
_BROKEN_FROM_RPC = frozenset(
    {
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_ERR_INTERNAL_ERROR,
        libvirt.VIR_ERR_OPERATION_FAILED,
    }
)
_RPC_DOMAINS = frozenset({libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE})


def is_connection_error(error: libvirt.libvirtError) -> bool:
    """Whether C{error} by itself says that the connection is broken."""
    code = error.get_error_code()
    if code in _BROKEN_ALWAYS:
        return True
    return code in _BROKEN_FROM_RPC and error.get_error_domain() in _RPC_DOMAINS


def connection_alive(conn) -> bool:
    """
    Whether C{conn} still works, as far as libvirt's client knows without a
    round trip (C{virConnectIsAlive}).  Call it in a libvirt thread.
    """
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def translate(error: libvirt.libvirtError, conn, what: str) -> Exception:
    """
    The exception to raise instead of C{error}, which libvirt raised on
    C{conn} while doing C{what} (a phrase such as C{"starting domain 'web-1'"}).

    Call it in the libvirt thread that caught C{error}: it may ask C{conn}
    whether it is still alive.

    @return: L{ConnectionLost}, L{NotFound}, L{Conflict}, L{InvalidInput} or
        L{HypervisorError}.
    """
    code = error.get_error_code()
    message = error.get_error_message() or str(error)
    if is_connection_error(error) or not connection_alive(conn):
        return ConnectionLost(message)
    if code in _NOT_FOUND:
        return NotFound(f"{what}: {message}")
    if code in _CONFLICT:
        return Conflict(f"{what}: {message}")
    if code == libvirt.VIR_ERR_OPERATION_TIMEOUT:
        # The host answers, but the domain is busy (its job lock is held).
        return Conflict(f"{what}: the domain is busy: {message}")
    if code in _INVALID:
        return InvalidInput(f"{what}: {message}")
    return HypervisorError(f"{what}: {message}", code)


def make_error(code: int, domain: int, message: str) -> libvirt.libvirtError:
    """
    A C{libvirtError} with the given code, subsystem and message, as libvirt
    would raise it; for fakes and tests.
    """
    error = libvirt.libvirtError(message)
    error.err = (code, domain, message, libvirt.VIR_ERR_ERROR, None, None, None, 0, 0)
    return error
