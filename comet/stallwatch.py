"""
Reactor stalls, caught in the act: C{[debug] stall_ms}.

Everything in Comet runs on one reactor thread, so anything that holds it
(a blocking call, a long loop, a full garbage collection, a C{posix_spawn}
that waits for its child to be scheduled) delays every request at once.  A
profile shows where CPU goes on average; it does not show the one 100 ms
pause in 6,000 requests that makes a p99.  L{StallWatch} does: the reactor
bumps a heartbeat every few milliseconds, a thread of its own checks it, and
when the heartbeat is older than the threshold it takes the reactor thread's
stack I{while the stall is still going on} and logs it (from the reactor,
once it runs again) with how late the reactor was.

Off by default; turning it on costs a thread waking every few milliseconds.
It found the stalls that C{bench/README.md} describes.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from typing import Any, Callable

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()


class StallWatch:
    """
    Logs the reactor thread's stack whenever the reactor has not run for
    C{threshold} seconds (once per stall).

    @param reactor: the reactor to watch; L{start} must be called in its thread.
    @param threshold: seconds.
    @param report: called in the reactor thread with C{(late, stack)} for each
        stall: C{late} in seconds, C{stack} the formatted frames; logs a
        warning by default.
    """

    def __init__(self, reactor: Any, threshold: float,
                 report: Callable[[float, str], None] | None = None):
        self._reactor = reactor
        self._threshold = threshold
        self._report = report or _log_stall
        self._beat = time.monotonic()
        self._tick = max(0.001, threshold / 10)
        self._stopped = threading.Event()
        self._loop = LoopingCall(self._heartbeat)
        self._loop.clock = reactor
        self._thread: threading.Thread | None = None

    def _heartbeat(self) -> None:
        self._beat = time.monotonic()

    def start(self) -> None:
        self._reactor_thread = threading.get_ident()
        self._beat = time.monotonic()
        self._loop.start(self._tick)
        self._thread = threading.Thread(target=self._watch, name="comet-stallwatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._loop.running:
            self._loop.stop()
        if self._thread is not None:
            self._thread.join(1)
            self._thread = None

    def _watch(self) -> None:
        reported = None   # the heartbeat of the stall last reported
        while not self._stopped.wait(self._tick):
            beat = self._beat
            late = time.monotonic() - beat
            if late < self._threshold or beat == reported:
                continue
            reported = beat
            frame = sys._current_frames().get(self._reactor_thread)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
            # Said once the reactor runs again, with how long it was held in the end.
            self._reactor.callFromThread(self._said, beat, stack)

    def _said(self, beat: float, stack: str) -> None:
        self._report(time.monotonic() - beat, stack)


def _log_stall(late: float, stack: str) -> None:
    log.warn("the reactor did not run for {ms:.0f} ms; it was here:\n{stack}",
             ms=late * 1000, stack=stack)
