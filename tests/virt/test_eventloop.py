"""Tests for L{comet.virt._eventloop}."""

from __future__ import annotations

import libvirt
from twisted.trial.unittest import TestCase

from comet.virt import _eventloop
from comet.virt._eventloop import ensure_event_loop, lifecycle_event_name


class EventLoopTests(TestCase):
    def test_once(self):
        """
        The event loop runs in one daemon thread, however often it is asked
        for.
        """
        ensure_event_loop()
        thread = _eventloop._thread
        ensure_event_loop()
        self.assertIs(_eventloop._thread, thread)
        self.assertTrue(thread.is_alive())
        self.assertTrue(thread.daemon)
        self.assertEqual(thread.name, "comet-libvirt-events")

    def test_names(self):
        """Lifecycle events have lower-case names; unknown codes are C{other}."""
        self.assertEqual(lifecycle_event_name(libvirt.VIR_DOMAIN_EVENT_STARTED), "started")
        self.assertEqual(lifecycle_event_name(libvirt.VIR_DOMAIN_EVENT_STOPPED), "stopped")
        self.assertEqual(lifecycle_event_name(1000), "other")
