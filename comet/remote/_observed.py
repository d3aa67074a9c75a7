"""
One outcome, many observers: each gets a L{Deferred} of its own, so that one
observer's callbacks never change what another sees, and a failure nobody
asked about is never reported as an unhandled error.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


class Observed:
    """
    The outcome of something, handed to any number of observers, each on a
    L{Deferred} of its own (so that one observer's callbacks or an
    unobserved failure never affect another).
    """

    def __init__(self):
        self._result: object = None
        self._settled = False
        self._waiting: list[Deferred] = []

    @property
    def settled(self) -> bool:
        return self._settled

    def observe(self, canceller=None) -> Deferred:
        d = Deferred(canceller)
        if not self._settled:
            self._waiting.append(d)
        elif isinstance(self._result, Failure):
            d.errback(self._result)
        else:
            d.callback(self._result)
        return d

    def settle(self, result: object) -> None:
        self._result, self._settled = result, True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if d.called:  # cancelled meanwhile
                continue
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)
