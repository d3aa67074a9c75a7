"""
Libvirt's event loop, run once per process in a thread of its own.

Libvirt delivers domain events, keepalive pings, close notifications and
non-blocking stream data only to a process that registered an event loop
I{before} it opened its connections.  Comet uses libvirt's default
implementation in a daemon thread; callbacks therefore run in that thread, and
whoever registers one hands its work to the reactor with
C{reactor.callFromThread}.
"""

from __future__ import annotations

import threading

import libvirt
from twisted.logger import Logger

_log = Logger()
_lock = threading.Lock()
_thread: threading.Thread | None = None

#: Names of libvirt's lifecycle events (C{VIR_DOMAIN_EVENT_*}), as Comet's
#: subscribers see them.
LIFECYCLE_EVENTS = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}


def lifecycle_event_name(event: int) -> str:
    """The name of lifecycle event C{event}; C{"other"} for codes newer than Comet."""
    return LIFECYCLE_EVENTS.get(event, "other")


def _ignore_error(context, error) -> None:
    # Libvirt's default handler prints every error on stderr, including the
    # ones Comet expects and handles; they reach Comet as exceptions anyway.
    pass


def _run() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except Exception:
            _log.failure("libvirt event loop iteration failed")


def ensure_event_loop() -> None:
    """
    Register libvirt's default event loop and run it in a daemon thread, once
    per process.  Call it before opening any libvirt connection whose events,
    keepalives or streams matter; calling it again does nothing.
    """
    global _thread
    with _lock:
        if _thread is not None:
            return
        libvirt.registerErrorHandler(_ignore_error, None)
        libvirt.virEventRegisterDefaultImpl()
        _thread = threading.Thread(
            target=_run, name="comet-libvirt-events", daemon=True
        )
        _thread.start()
