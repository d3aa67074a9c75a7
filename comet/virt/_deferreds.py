"""
Small helpers over Deferreds that the state cache, its probes and the
connections share.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.python.failure import Failure


def as_deferred(method, *args) -> Deferred:
    """C{method(*args)} as a L{Deferred}, whether it answers one or is a coroutine (as a test's stand-in may be)."""
    try:
        return ensureDeferred(method(*args))
    except Exception:
        return fail()


def chain(result, d: Deferred) -> None:
    """Pass C{result} (a value or a failure) on to C{d}; the source ends with C{None}."""
    if isinstance(result, Failure):
        d.errback(result)
    else:
        d.callback(result)


def after(d: Deferred) -> Deferred[None]:
    """A new L{Deferred} that fires (with C{None}) once C{d} has, leaving C{d}'s result alone."""
    fired: Deferred = Deferred()

    def fire(result):
        fired.callback(None)
        return result

    d.addBoth(fire)
    return fired
