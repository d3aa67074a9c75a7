"""The stall watch: a reactor held too long is caught with its stack."""

import time

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from comet.stallwatch import StallWatch


def hold_the_reactor(seconds: float) -> None:
    time.sleep(seconds)


class StallWatchTests(TestCase):
    def watch(self, threshold: float) -> list:
        reports: list = []
        watch = StallWatch(reactor, threshold, lambda late, stack: reports.append((late, stack)))
        watch.start()
        self.addCleanup(watch.stop)
        return reports

    async def test_stall_reported_with_its_stack(self):
        """A call that holds the reactor past the threshold is named, once, with how long."""
        reports = self.watch(0.05)
        await deferLater(reactor, 0.05, hold_the_reactor, 0.3)
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(len(reports), 1, reports)
        late, stack = reports[0]
        self.assertGreaterEqual(late, 0.25)
        self.assertIn("hold_the_reactor", stack)

    async def test_quiet_reactor_reports_nothing(self):
        reports = self.watch(0.2)
        await deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(reports, [])

    async def test_logged_by_default(self):
        """Without a report function the stall is a warning in the log."""
        events: list = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        watch = StallWatch(reactor, 0.05)
        watch.start()
        self.addCleanup(watch.stop)
        await deferLater(reactor, 0.05, hold_the_reactor, 0.2)
        await deferLater(reactor, 0.1, lambda: None)
        said = [e for e in events if "did not run" in e.get("log_format", "")]
        self.assertEqual(len(said), 1)
        self.assertIn("hold_the_reactor", said[0]["stack"])
