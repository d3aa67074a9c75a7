"""Tests for the public face of L{comet.remote}."""

from twisted.trial.unittest import SynchronousTestCase

import comet.remote


class PublicNamesTests(SynchronousTestCase):
    """Everything C{__all__} promises is there."""

    def test_all(self):
        for name in comet.remote.__all__:
            self.assertTrue(hasattr(comet.remote, name), name)

    def test_fake_server(self):
        from comet.remote._fakeserver import FakeStorageServer

        self.assertIs(comet.remote.FakeStorageServer, FakeStorageServer)

    def test_unknown(self):
        self.assertRaises(AttributeError, getattr, comet.remote, "NoSuchThing")
