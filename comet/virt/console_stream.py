"""
A domain's serial console as a byte stream: libvirt's C{openConsole} over a
connection of its own, pumped by a thread of its own (a console lives for
minutes: neither the adapter's per-host thread nor the reactor's thread pool
may be held by it).  It works for a remote host as well, as the stream
travels in the libvirt connection.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable

import libvirt

#: Seconds the pump sleeps when there is nothing to read or write.
IDLE = 0.02


class SerialConsole:
    """
    The first serial console of domain C{domain} on the host at C{uri}.

    @param received: called in the reactor thread with each chunk of output.
    @param ended: called once in the reactor thread when the console is over,
        with why (C{None} when L{close} ended it or the guest's side closed).
    """

    def __init__(
        self,
        reactor,
        uri: str,
        domain: str,
        received: Callable[[bytes], None],
        ended: Callable[[str | None], None],
    ):
        self._reactor = reactor
        self._uri = uri
        self._domain = domain
        self._received = received
        self._ended = ended
        self._out: queue.Queue[bytes] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"console {domain}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def write(self, data: bytes) -> None:
        """Send C{data} to the guest's serial port."""
        self._out.put(data)

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        why = None
        conn = stream = None
        try:
            conn = libvirt.open(self._uri)
            stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            dom = conn.lookupByName(self._domain)
            dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
            pending = b""
            while not self._stop.is_set():
                busy = False
                data = stream.recv(65536)
                if data == -2:
                    pass
                elif not data:
                    break  # the guest's side closed (the domain stopped)
                else:
                    busy = True
                    self._reactor.callFromThread(self._received, data)
                while not pending:
                    try:
                        pending = self._out.get_nowait()
                    except queue.Empty:
                        break
                if pending:
                    sent = stream.send(pending)
                    if sent > 0:
                        pending = pending[sent:]
                        busy = True
                if not busy:
                    time.sleep(IDLE)
        except libvirt.libvirtError as e:
            why = e.get_error_message() or str(e)
        finally:
            if stream is not None:
                try:
                    stream.abort()
                except libvirt.libvirtError:
                    pass
            if conn is not None:
                try:
                    conn.close()
                except libvirt.libvirtError:
                    pass
            self._reactor.callFromThread(self._ended, why)
