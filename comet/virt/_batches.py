"""
L{Batches}: short blocking calls made during one turn of the reactor, handed
to a thread pool together instead of one hand-off each.

A probe (L{comet.virt.Hypervisors.ping}) is one call that takes microseconds
on libvirt's test driver and one round trip on a remote host, but a
C{GET /cluster} over 100 hosts makes 100 of them, and handing each to a pool
thread on its own (a thread woken, a timer, a C{callFromThread} back) cost
the reactor ~15 ms and the process ~33 ms of CPU per request, for 0.3 ms of
libvirt work (measured with 100 test-driver hosts, 2026-12-04).

So the calls made during one reactor turn are run one after the other in
I{chunks}, each one hand-off to a pool thread and one answer back: as many
calls in a chunk as fit in L{CHUNK_SECONDS} by the time each key (a host)
took last; a call whose key was slow gets a chunk of its own, so slow hosts
still run side by side.

A call that blocks (a host that stopped answering) must not hold back the
calls behind it: a chunk that has not ended after L{STALL} seconds gives up
every call it has not begun, and they run in new chunks, in other threads.
Only the call in progress keeps waiting; its caller's own timeout (the
connection's C{libvirt_timeout}) still applies.  A call's caller may cancel
its L{Deferred} (a timeout does); the call still runs to its end in its
thread, and C{ended} is called only then.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

#: Seconds of expected work per chunk (by what each key's last calls took).
CHUNK_SECONDS = 0.005
#: Seconds after which a chunk that has not ended gives up its calls not begun.
STALL = 0.05
#: Weight of the newest measure in a key's expected duration.
_SMOOTHING = 0.25


class PoolStopped(Exception):
    """The pool was stopped before the call could be handed to it."""


@attrs.define(eq=False)
class _Call:
    key: Any
    function: Callable[..., Any]
    args: tuple
    deferred: Deferred
    ended: Callable[[], object] | None
    #: Set in the thread once the call returned: C{(True, value)} or C{(False, Failure)}.
    outcome: tuple[bool, Any] | None = None
    seconds: float = 0.0
    delivered: bool = False


@attrs.define(eq=False)
class _Chunk:
    calls: list[_Call]
    lock: threading.Lock = attrs.Factory(threading.Lock)
    #: Index of the next call to begin (moved by the thread, under C{lock}).
    next: int = 0
    #: Calls from this index on were given up (set by the reactor, under C{lock}).
    stop: int | None = None
    timer: Any = None

    def __attrs_post_init__(self) -> None:
        self.stop = len(self.calls)


def _run_chunk(chunk: _Chunk) -> None:
    """In a pool thread: each call of C{chunk} not given up, in order."""
    while True:
        with chunk.lock:
            index = chunk.next
            if index >= chunk.stop:
                return
            chunk.next = index + 1
        call = chunk.calls[index]
        began = time.perf_counter()
        try:
            outcome = (True, call.function(*call.args))
        except BaseException:
            outcome = (False, Failure())
        call.seconds = time.perf_counter() - began
        call.outcome = outcome


class Batches:
    """
    Runs C{function(*args)} in a pool thread, batched with the other calls of
    the same reactor turn (see the module docstring).

    @param reactor: runs timers and hands results back (C{callLater},
        C{callFromThread}).
    @param pool: C{pool() -> ThreadPool}, the pool to use now (a service
        makes a new one when it starts again).
    """

    def __init__(self, reactor, pool: Callable[[], Any]):
        self._reactor = reactor
        self._pool = pool
        self._pending: list[_Call] = []
        self._flush_call = None
        #: Key -> expected seconds of one call.
        self._expected: dict[Any, float] = {}
        #: Chunks handed to the pool (for tests and the benchmark's curiosity).
        self.handoffs = 0

    def run(self, key: Any, function: Callable[..., Any], *args,
            ended: Callable[[], object] | None = None) -> Deferred:
        """
        C{function(*args)}'s result, run in a pool thread after this reactor
        turn; C{ended()} is called (in the reactor thread) once the call has
        returned, even if the L{Deferred} was cancelled meanwhile.
        """
        call = _Call(key, function, args, Deferred(), ended)
        self._pending.append(call)
        if self._flush_call is None:
            self._flush_call = self._reactor.callLater(0, self._flush)
        return call.deferred

    def _flush(self) -> None:
        self._flush_call = None
        calls, self._pending = self._pending, []
        self._dispatch(calls)

    def _dispatch(self, calls: list[_Call]) -> None:
        for chunk in self._chunks(calls):
            self._start(chunk)

    def _chunks(self, calls: list[_Call]) -> list[_Chunk]:
        chunks, current, budget = [], [], 0.0
        for call in calls:
            cost = self._expected.get(call.key, 0.0)
            if current and budget + cost > CHUNK_SECONDS:
                chunks.append(_Chunk(current))
                current, budget = [], 0.0
            current.append(call)
            budget += cost
        if current:
            chunks.append(_Chunk(current))
        return chunks

    def _start(self, chunk: _Chunk) -> None:
        pool = self._pool()
        if pool.joined:
            # A stopped pool drops work silently: say so instead.
            failure = Failure(PoolStopped("the thread pool is stopped"))
            for call in chunk.calls:
                call.outcome = (False, failure)
            self._deliver(chunk)
            return
        self.handoffs += 1
        d = deferToThreadPool(self._reactor, pool, _run_chunk, chunk)
        chunk.timer = self._reactor.callLater(STALL, self._stalled, chunk)
        d.addBoth(self._finished, chunk)

    def _finished(self, result, chunk: _Chunk) -> None:
        if chunk.timer is not None and chunk.timer.active():
            chunk.timer.cancel()
        self._deliver(chunk)

    def _stalled(self, chunk: _Chunk) -> None:
        """The chunk is stuck in a call: its calls not begun go to new chunks."""
        chunk.timer = None
        with chunk.lock:
            given_up = chunk.calls[chunk.next:chunk.stop]
            chunk.stop = chunk.next
        self._deliver(chunk)
        if given_up:
            self._dispatch(given_up)

    def _deliver(self, chunk: _Chunk) -> None:
        """Answer every call of C{chunk} that has returned and is not answered yet."""
        for call in chunk.calls[:chunk.stop]:
            outcome = call.outcome
            if outcome is None or call.delivered:
                continue
            call.delivered = True
            known = self._expected.get(call.key)
            self._expected[call.key] = (
                call.seconds if known is None else known + _SMOOTHING * (call.seconds - known)
            )
            if call.ended is not None:
                call.ended()
            if call.deferred.called:
                continue  # cancelled by its caller (timed out)
            ok, value = outcome
            if ok:
                call.deferred.callback(value)
            else:
                call.deferred.errback(value)
