"""
The VM's serial console in this terminal.

C{GET …/console?type=serial} answers 303 with a single-use ticket in the
URI's fragment; the websocket C{/console/ws/CLUSTER/VM/TOKEN} (subprotocol
C{binary}) then carries the guest's output as binary frames and takes our
keystrokes.  The terminal is put in raw mode (every key goes to the guest,
Ctrl-C too) and restored on any exit; L{ESCAPE} (Ctrl-]) leaves, as in
telnet and virsh console.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import threading
import tty
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

#: The byte that ends the session (Ctrl-]).
ESCAPE = b"\x1d"
ESCAPE_NAME = "Ctrl-]"


def websocket_url(base_url: str, location: str) -> str:
    """The websocket URL of a serial console page's C{Location} (ticket in its fragment)."""
    fragment = parse_qs(urlsplit(location).fragment)
    token, vm = fragment["token"][0], fragment["vm"][0]
    cluster, _, name = vm.partition("/")
    base = urlsplit(base_url)
    scheme = "wss" if base.scheme == "https" else "ws"
    path = base.path.rstrip("/") + "/console/ws/" + "/".join(quote(p, safe="") for p in (cluster, name, token))
    return urlunsplit((scheme, base.netloc, path, "", ""))


class SerialSession:
    """Relays bytes between a terminal (file descriptors) and the console websocket."""

    def __init__(self, url: str, stdin: int = 0, stdout: int = 1):
        self.url = url
        self.stdin = stdin
        self.stdout = stdout
        self.ended = threading.Event()
        self.why: str | None = None
        #: Whether the daemon closed the console for a failure (not the user leaving).
        self.failed = False

    def run(self) -> str:
        """Relay until the escape key or the console closes; the reason it ended."""
        with connect(self.url, subprotocols=["binary"], max_size=2**20,
                     open_timeout=15, compression=None) as ws:
            receiver = threading.Thread(target=self._receive, args=(ws,), daemon=True)
            saved = termios.tcgetattr(self.stdin) if os.isatty(self.stdin) else None
            try:
                if saved is not None:
                    tty.setraw(self.stdin)
                receiver.start()
                self._send(ws)
            finally:
                if saved is not None:
                    termios.tcsetattr(self.stdin, termios.TCSADRAIN, saved)
        return self.why or "left"

    def _send(self, ws):
        while not self.ended.is_set():
            ready, _, _ = select.select([self.stdin], [], [], 0.2)
            if not ready:
                continue
            data = os.read(self.stdin, 4096)
            if not data:
                self.why = "end of input"
                return
            if ESCAPE in data:
                data = data[:data.index(ESCAPE)]
                if data:
                    ws.send(data)
                self.why = f"left with {ESCAPE_NAME}"
                return
            try:
                ws.send(data)
            except ConnectionClosed:
                return

    def _receive(self, ws):
        try:
            for message in ws:
                data = message.encode("utf-8") if isinstance(message, str) else message
                os.write(self.stdout, data)
        except ConnectionClosed:
            pass
        finally:
            if self.why is None:
                self.failed = ws.close_code not in (None, 1000)
                reason = ws.close_reason
                self.why = "the console closed" + (f": {reason}" if reason else "")
            self.ended.set()


def attach(url: str) -> tuple[str, bool]:
    """Attach this process's terminal to the console at C{url}: why it ended, and whether it failed."""
    sys.stderr.write(f"Connected to the serial console; {ESCAPE_NAME} leaves.\r\n")
    sys.stderr.flush()
    session = SerialSession(url)
    why = session.run()
    return why, session.failed
