"""
A libvirt connection that records every call, for tests.

L{Recorder.open} stands in for C{libvirt.open}: the connection it returns,
and every domain, stream and secret object that comes out of it, is a proxy
that notes each method call with the thread it ran in, and can be told to
fail a call, to hold it until released, or to answer it itself (for calls the
test driver does not implement, such as device hot-plug and secrets).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import attrs
import libvirt

from comet.virt._errors import make_error

#: Methods that never leave the client process, even on a remote connection
#: (the name and UUID travel with the domain object).
LOCAL_METHODS = frozenset({"name", "UUIDString", "UUID"})

_WRAPPED = (libvirt.virConnect, libvirt.virDomain, libvirt.virStream, libvirt.virSecret)


@attrs.frozen
class Call:
    method: str
    thread: threading.Thread
    #: The C{virConnect} the call went through (C{None} for C{open}).
    connection: Any = None


class Recorder:
    """
    Opens recording connections, and keeps what they did.

    @ivar calls: every L{Call}, in order.
    @ivar closers: C{(callback, opaque, conn)} for each close callback
        registered, so a test can pretend libvirt closed a connection.
    """

    def __init__(self, opener: Callable[[str], Any] = libvirt.open):
        self._opener = opener
        self._lock = threading.Lock()
        self.calls: list[Call] = []
        self.closers: list[tuple[Callable, Any, Any]] = []
        self.opened = 0
        #: Calls that began while another call was inside on the same
        #: C{virConnect} (libvirt's RPC client cannot take that: see
        #: L{comet.virt._sessions}).
        self.shared: list[str] = []
        self._inside: dict[int, int] = {}
        self._failures: dict[str, list[BaseException]] = {}
        self._always: dict[str, BaseException] = {}
        self._gates: dict[str, threading.Event] = {}
        self._fakes: dict[str, Callable] = {}

    # Steering ----------------------------------------------------------------

    def fail_next(self, method: str, error: BaseException) -> None:
        """Make the next call of C{method} (on any object) raise C{error}."""
        with self._lock:
            self._failures.setdefault(method, []).append(error)

    def fail_always(self, method: str, error: BaseException | None) -> None:
        """Make every call of C{method} raise C{error}; C{None} stops it."""
        with self._lock:
            if error is None:
                self._always.pop(method, None)
            else:
                self._always[method] = error

    def hold(self, method: str) -> threading.Event:
        """
        Make calls of C{method} wait until the returned event is set (or 30
        seconds pass), like a host that stopped answering.
        """
        gate = threading.Event()
        with self._lock:
            self._gates[method] = gate
        return gate

    def fake(self, method: str, implementation: Callable) -> None:
        """
        Answer C{method} with C{implementation(target, *args)} instead of
        libvirt, where C{target} is the real libvirt object.
        """
        with self._lock:
            self._fakes[method] = implementation

    # Reading -----------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()

    def methods(self) -> list[str]:
        with self._lock:
            return [c.method for c in self.calls]

    def round_trips(self) -> int:
        """Calls that would cross the network on a remote connection."""
        return sum(1 for m in self.methods() if m not in LOCAL_METHODS)

    def threads(self) -> set[threading.Thread]:
        with self._lock:
            return {c.thread for c in self.calls}

    # Opening -----------------------------------------------------------------

    def open(self, uri: str):
        self._before("open")
        conn = self._opener(uri)
        with self._lock:
            self.opened += 1
        return _Proxy(self, conn)

    def connections(self, method: str) -> list:
        """The C{virConnect} each call of C{method} went through, in order."""
        with self._lock:
            return [c.connection for c in self.calls if c.method == method]

    def _enter(self, method: str, connection) -> None:
        with self._lock:
            inside = self._inside.get(id(connection), 0)
            if inside:
                self.shared.append(method)
            self._inside[id(connection)] = inside + 1

    def _leave(self, connection) -> None:
        with self._lock:
            self._inside[id(connection)] -= 1

    def _before(self, method: str, connection=None) -> Callable | None:
        with self._lock:
            self.calls.append(Call(method, threading.current_thread(), connection))
            queued = self._failures.get(method)
            error = queued.pop(0) if queued else self._always.get(method)
            gate = self._gates.get(method)
            fake = self._fakes.get(method)
        if gate is not None:
            gate.wait(30)
        if error is not None:
            raise error
        return fake


def _unwrap(value):
    return object.__getattribute__(value, "_target") if isinstance(value, _Proxy) else value


def _wrap(recorder: Recorder, value):
    if isinstance(value, _WRAPPED):
        return _Proxy(recorder, value)
    if isinstance(value, list):
        return [_wrap(recorder, v) for v in value]
    if isinstance(value, tuple):
        return tuple(_wrap(recorder, v) for v in value)
    return value


class _Proxy:
    """A libvirt object whose method calls go through a L{Recorder}."""

    def __init__(self, recorder: Recorder, target):
        object.__setattr__(self, "_recorder", recorder)
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str):
        recorder = object.__getattribute__(self, "_recorder")
        target = object.__getattribute__(self, "_target")
        attribute = getattr(target, name)
        if name.startswith("_") or not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            connection = _connection_of(target)
            recorder._enter(name, connection)
            try:
                fake = recorder._before(name, connection)
                args = tuple(_unwrap(a) for a in args)
                if name == "registerCloseCallback":
                    with recorder._lock:
                        recorder.closers.append((args[0], args[1], target))
                if fake is not None:
                    return _wrap(recorder, fake(target, *args, **kwargs))
                return _wrap(recorder, attribute(*args, **kwargs))
            finally:
                recorder._leave(connection)

        return call


def _connection_of(target):
    """The C{virConnect} a libvirt object's calls go through."""
    if isinstance(target, libvirt.virConnect):
        return target
    return getattr(target, "_conn", None)


def libvirt_error(code: int, domain: int = libvirt.VIR_FROM_NONE, message: str = "injected"):
    """A C{libvirtError} as libvirt raises it, with C{code} and C{domain}."""
    return make_error(code, domain, message)
