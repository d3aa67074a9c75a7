"""
L{comet.model.events.VMStateEvents}: libvirt's lifecycle events become
C{vm.state} events once the state cache has weighed them (the stream end to
end is tests/web/test_events.py).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from comet.model.events import EventLog, VMStateEvents
from comet.store import VMRecord


class _Subscriptions:
    """What VMStateEvents subscribes to (L{comet.virt.Hypervisors}' two lists of callbacks)."""

    def __init__(self):
        self.domains, self.hosts = [], []

    def subscribe(self, callback):
        self.domains.append(callback)
        return lambda: self.domains.remove(callback)

    def subscribe_hosts(self, callback):
        self.hosts.append(callback)
        return lambda: self.hosts.remove(callback)

    def event(self, host, domain, event):
        for callback in list(self.domains):
            callback(host, domain, event)


class VMStateEventsTests(TestCase):
    def setUp(self):
        self.log = EventLog(Clock())
        self.told = []
        self.log.subscribe(self.told.append)
        self.libvirt = _Subscriptions()
        self.waiting: dict[str, list[Deferred]] = {}

        def settled(host, domain):
            d = Deferred()
            self.waiting.setdefault(domain, []).append(d)
            return d

        def by_uuid(uuid):
            return succeed(VMRecord(id=1, cluster="lab", name=f"vm-{uuid}", uuid=uuid,
                                    template="t", memory=64, cpus=1, host="n1", created=0))

        self.states = VMStateEvents(self.log, self.libvirt, by_uuid, settled=settled)
        self.addCleanup(self.states.close)

    def test_told_once_settled(self):
        """
        An event is told only once its domain has settled, so a client that
        reads the VM on it is given the new state; one domain's events keep
        libvirt's order, another domain's are not held behind them.
        """
        self.libvirt.event("n1", "comet-a", "resumed")
        self.libvirt.event("n1", "comet-a", "started")
        self.libvirt.event("n1", "comet-b", "stopped")
        self.assertEqual(self.told, [])
        self.waiting["comet-b"][0].callback(None)
        self.assertEqual([(e.ids["name"], e.data["event"]) for e in self.told],
                         [("vm-b", "stopped")])
        for d in self.waiting["comet-a"]:
            d.callback(None)
        self.assertEqual([(e.ids["name"], e.data["event"], e.data["state"]) for e in self.told],
                         [("vm-b", "stopped", "shutoff"), ("vm-a", "resumed", "running"),
                          ("vm-a", "started", "running")])
