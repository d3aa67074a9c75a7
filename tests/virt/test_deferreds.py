"""L{comet.virt._deferreds}: the Deferred helpers the cache, probes and connections share."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from comet.virt._deferreds import after, as_deferred, chain


class DeferredHelperTests(SynchronousTestCase):
    def test_after_leaves_the_result(self):
        """C{after(d)} fires with None once C{d} has, and C{d} keeps its result (a failure too)."""
        d = Deferred()
        fired = after(d)
        self.assertNoResult(fired)
        d.errback(ValueError("x"))
        self.assertIsNone(self.successResultOf(fired))
        self.failureResultOf(d, ValueError)

    def test_chain(self):
        """A value is called back, a failure errbacked."""
        good, bad = Deferred(), Deferred()
        chain(1, good)
        chain(Failure(ValueError("x")), bad)
        self.assertEqual(self.successResultOf(good), 1)
        self.failureResultOf(bad, ValueError)

    def test_as_deferred(self):
        """A Deferred, a coroutine or a raising call all become a Deferred."""
        async def coroutine():
            return 2

        def raising():
            raise ValueError("no")

        self.assertEqual(self.successResultOf(as_deferred(succeed, 1)), 1)
        self.assertEqual(self.successResultOf(as_deferred(coroutine)), 2)
        self.failureResultOf(as_deferred(raising), ValueError)

