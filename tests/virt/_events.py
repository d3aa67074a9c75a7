"""
L{LateEvents}: a L{Hypervisors} whose lifecycle events reach its subscribers
only when a test lets them, as when libvirt's event thread is slow to hand
them over (a busy machine): held, then let through in their order, late.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred


class LateEvents:
    """
    Everything of C{hypervisors}, but its lifecycle events wait in L{held}
    while L{holding} is true, until L{release}; the subscriber list is this
    object's own, fed from C{hypervisors.subscribe}.
    """

    def __init__(self, hypervisors, holding: bool = True):
        self._hv = hypervisors
        self.holding = holding
        #: The events not delivered yet, C{(host, domain, event)}, in order.
        self.held: list[tuple[str, str, str]] = []
        self._subscribers: list[Callable[[str, str, str], object]] = []
        self._arrivals: list[tuple[str, str, Deferred]] = []
        self._unsubscribe = hypervisors.subscribe(self._arrived)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hv, name)

    def subscribe(self, callback: Callable[[str, str, str], object]) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: callback in self._subscribers and self._subscribers.remove(callback)

    def arrival(self, domain: str, event: str) -> Deferred[None]:
        """Fires once C{event} of C{domain} has come from libvirt (held or delivered)."""
        d: Deferred = Deferred()
        self._arrivals.append((domain, event, d))
        return d

    def _arrived(self, host: str, domain: str, event: str) -> None:
        waiting = [a for a in self._arrivals if a[:2] == (domain, event)]
        self._arrivals = [a for a in self._arrivals if a[:2] != (domain, event)]
        if self.holding:
            self.held.append((host, domain, event))
        else:
            self.deliver(host, domain, event)
        for _, _, d in waiting:
            d.callback(None)

    def deliver(self, host: str, domain: str, event: str) -> None:
        for callback in list(self._subscribers):
            callback(host, domain, event)

    def release(self, count: int | None = None) -> list[tuple[str, str, str]]:
        """Deliver the first C{count} held events (all by default); those delivered."""
        count = len(self.held) if count is None else count
        out, self.held = self.held[:count], self.held[count:]
        for event in out:
            self.deliver(*event)
        return out

    def close(self) -> None:
        self._unsubscribe()
