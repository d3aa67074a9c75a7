"""
What keeps password guessing slow and bounded, without ever slowing down a
caller whose credentials are right.

  - L{LoginThrottle}: failed password guesses are counted per user name from
    one address, and per user name from every address, in a sliding window.
    Over either limit, a guess is refused at once (429 with C{Retry-After})
    without being checked.  A guess is counted when it I{starts} (a
    reservation, given back if the password was right), so parallel guesses
    cannot all slip in before the first one fails.  Nothing is ever delayed:
    an API token, or another user's password, from the same address is
    answered as if nothing happened.
  - L{PasswordChecks}: the scrypt work itself (half a second of CPU and 64 MiB
    each, L{comet.credentials}) runs in a small thread pool of its own, not in
    the reactor's (which the database and libvirt calls share), with at most
    so many checks in flight from one address and in all; more is refused at
    once (429 for one address, 503 in all), never queued without bound.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from comet.web._errors import HTTPError


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class _Count:
    """Failures (their times, oldest first) and checks in flight for one key."""

    __slots__ = ("failures", "in_flight")

    def __init__(self):
        self.failures: deque[float] = deque()
        self.in_flight = 0


class LoginThrottle:
    """
    Counts failed password guesses per C{(user name, address)} and per user
    name, over the last C{window} seconds.

    @param per_address: failed guesses allowed for one user name from one address.
    @param per_user: failed guesses allowed for one user name from all
        addresses (C{None}: no such limit).
    @param size: keys remembered at most (the least recently used go first).
    """

    def __init__(self, clock, per_address: int = 5, per_user: int = 20,
                 window: float = 600.0, size: int = 10000):
        self.clock = clock
        self.per_address = per_address
        self.per_user = per_user
        self.window = window
        self.size = size
        self._counts: OrderedDict[tuple, _Count] = OrderedDict()

    def _keys(self, name: str, address: str) -> list[tuple[tuple, int]]:
        keys = [(("address", name, address), self.per_address)]
        if self.per_user is not None:
            keys.insert(0, (("user", name), self.per_user))
        return keys

    def refusal(self, name: str, wait: float) -> str:
        """The 429's reason."""
        return (f"too many failed logins as {name!r}; try again in {math.ceil(wait)} s"
                " (an API token is not limited)")

    def _count(self, key: tuple, create: bool) -> _Count | None:
        count = self._counts.get(key)
        if count is not None:
            self._counts.move_to_end(key)
            horizon = self.clock.seconds() - self.window
            while count.failures and count.failures[0] <= horizon:
                count.failures.popleft()
        elif create:
            count = self._counts[key] = _Count()
            while len(self._counts) > self.size:
                oldest, old = next(iter(self._counts.items()))
                if old.in_flight:
                    # A key with a check running keeps its place.
                    self._counts.move_to_end(oldest)
                    break
                del self._counts[oldest]
        return count

    def retry_after(self, name: str, address: str) -> float:
        """Seconds until a guess for C{name} from C{address} would be allowed; 0: now."""
        wait = 0.0
        for key, limit in self._keys(name, address):
            count = self._count(key, create=False)
            if count is None or len(count.failures) + count.in_flight < limit:
                continue
            if len(count.failures) >= limit:
                oldest = count.failures[len(count.failures) - limit]
                wait = max(wait, oldest + self.window - self.clock.seconds())
            else:
                # Over only with the guesses being checked now: soon known.
                wait = max(wait, 1.0)
        return wait

    def reserve(self, name: str, address: str) -> None:
        """
        Count a guess that starts now, or raise a 429 (with C{Retry-After})
        if it would pass a limit.  Each reservation ends with L{succeeded},
        L{failed} or L{cancelled}.
        """
        wait = self.retry_after(name, address)
        if wait > 0:
            raise HTTPError(429, self.refusal(name, wait), _retry_after(wait))
        for key, _ in self._keys(name, address):
            self._count(key, create=True).in_flight += 1

    def _end(self, name: str, address: str, failed: bool) -> None:
        now = self.clock.seconds()
        for key, _ in self._keys(name, address):
            count = self._count(key, create=True)
            count.in_flight = max(0, count.in_flight - 1)
            if failed:
                count.failures.append(now)
            elif not count.failures and not count.in_flight:
                del self._counts[key]

    def succeeded(self, name: str, address: str) -> None:
        """The guess was right: it counts for nothing."""
        self._end(name, address, failed=False)

    def cancelled(self, name: str, address: str) -> None:
        """The guess was not checked after all (the checks were busy)."""
        self._end(name, address, failed=False)

    def failed(self, name: str, address: str) -> None:
        """The guess was wrong: it counts for C{window} seconds."""
        self._end(name, address, failed=True)


def _daemon_thread(*args, **kwargs) -> threading.Thread:
    # The pool is stopped with the reactor; a process that never stops its
    # reactor (a test run) must not wait for idle workers at exit.
    thread = threading.Thread(*args, **kwargs)
    thread.daemon = True
    return thread


class WrongTokens(LoginThrottle):
    """
    Counts wrong API tokens per address, to bound what they write.  A token
    cannot be guessed (256 random bits), and a right one is never refused
    or delayed whatever came before it from its address, so a wrong one is
    only looked up (a read by its hash) and answered 401; the first
    C{per_address} of an address in C{window} seconds are also written to
    the audit log, the rest only counted, so that a stranger's flood of
    tokens makes no more writes than that.
    """

    #: The name the counts are kept (and audited) under.
    NAME = "(token)"

    def __init__(self, clock, per_address: int = 20, window: float = 600.0, size: int = 10000):
        super().__init__(clock, per_address=per_address, per_user=None, window=window, size=size)

    def audit(self, address: str) -> bool:
        """Count a wrong token from C{address}; whether to audit it (under the limit)."""
        if self.retry_after(self.NAME, address) > 0:
            return False
        self.reserve(self.NAME, address)
        self.failed(self.NAME, address)
        return True


class PasswordChecks:
    """
    Runs password hashing in a thread pool of its own, C{threads} wide, with
    at most C{per_address} checks in flight (running or waiting) for one
    address and C{in_flight} in all.

    @param reactor: runs the pool's results back in the reactor thread, and
        stops the pool when it shuts down.
    """

    def __init__(self, reactor, threads: int = 2, in_flight: int = 8, per_address: int = 2):
        self.reactor = reactor
        self.limit = in_flight
        self.per_address = per_address
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name="comet-passwords")
        self._pool.threadFactory = _daemon_thread
        self._started = False
        self._in_flight = 0
        self._by_address: dict[str, int] = {}

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self._pool.start()
            self.reactor.addSystemEventTrigger("during", "shutdown", self.stop)

    def stop(self) -> None:
        if self._started:
            self._started = False
            self._pool.stop()

    def run(self, address: str, f: Callable[..., Any], *args: Any) -> Deferred:
        """
        C{f(*args)} in the pool; raise a 429 when C{address} has
        C{per_address} checks in flight already, a 503 when all have
        C{in_flight}.
        """
        mine = self._by_address.get(address, 0)
        if mine >= self.per_address:
            raise HTTPError(
                429, f"{mine} password checks from this address are running already;"
                " wait for their answers", _retry_after(1),
            )
        if self._in_flight >= self.limit:
            raise HTTPError(
                503, "too many password checks are running; try again shortly"
                " (an API token needs none)", _retry_after(1),
            )
        self._start()
        self._in_flight += 1
        self._by_address[address] = mine + 1

        def done(result):
            self._in_flight -= 1
            left = self._by_address[address] - 1
            if left:
                self._by_address[address] = left
            else:
                del self._by_address[address]
            return result

        # The count follows the thread, not the caller: a caller that gives up
        # (its client went away) leaves the check running, and counted.
        answer: Deferred = Deferred()
        deferToThreadPool(self.reactor, self._pool, f, *args).addBoth(done).chainDeferred(answer)
        return answer

    @property
    def in_flight(self) -> int:
        return self._in_flight
