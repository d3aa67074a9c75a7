"""
pytest glue for trial TestCases.

Under CI (C{CI=true} in the environment, as C{.ci/run} and CI services set it) a
skipped test is a failure that says why it was skipped: a test that skips
because something it needs is missing (Chromium, the testbed, sshd) proves
nothing, and a green run must not hide that.  Skips legitimate everywhere, CI
included, are listed in L{LEGITIMATE_SKIPS}.  Without C{CI}, tests skip as
usual, saying why (C{-rs}).

With pytest-xdist, C{--dist loadfile} (C{scripts/test} runs C{-n 3 --dist
loadfile}) shares the tests out to the workers a module at a time, as
xdist's own loadfile does, but with the integration tests in two streams
(L{work_unit}, L{pytest_xdist_make_scheduler}), each in one worker, one test
after another in their usual order, both handed out before any other unit:
most of their time is spent waiting for the testbed's TCG-emulated storage
servers and guests, and one stream alone took 58 of CI's 61 minutes.  The
tests that disturb the testbed for everyone (L{DISRUPTIVE}: they reboot or
stop a storage server, or freeze the local host's libvirtd) run alone: each holds the
run's testbed lock exclusively, every other integration test holds it shared
(L{TestbedTurns}).  The unit tests run in the third worker meanwhile, a
module's tests in one process as they always were.

Under pytest the reactor never stops, so the shutdown triggers that stop
Twisted thread pools (the reactor's own, adbapi's) never run; a pool whose
non-daemon worker threads are still alive then keeps the interpreter from
exiting after the last test.  Stop every pool still running at the end of the
session, and say which, so that the leak can be found.
"""

import contextlib
import fcntl
import gc
import os
import sys
import tempfile
import time

import pytest
from twisted.python.threadpool import ThreadPool

#: Tests (pytest node ids, relative to the repository) that may be skipped
#: even under CI, each with why that is right everywhere.  None today.
LEGITIMATE_SKIPS: dict[str, str] = {}


def under_ci() -> bool:
    """Whether this run is CI's: C{CI} set to true (or 1, or yes)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


#: The integration tests of the second stream (node id prefixes): SIGKILL
#: cases whose guests run firmware only (or one guest, booted once), the
#: storage servers' contract suites and the image downloads, about as long
#: together as the rest of tests/integration (a quiet run of 2026-12-05:
#: 865 s of kill cases here, 1,456 s in the first stream, of which the
#: modules moved here took 290 s).  None of them uses host2.
SECOND_STREAM = tuple(f"tests/integration/test_kill_steps.py::{name}::" for name in (
    "VolumeKillTests", "VMKillTests", "GuestKillTests")) + (
    "tests/integration/test_remote.py::", "tests/integration/test_image_download.py::",
    "tests/integration/test_local_kill.py::")
#: Integration tests (node id prefixes) that disturb what every test needs
#: while they run: they reboot or stop a storage server, or freeze the local
#: host's libvirtd (SIGSTOP).  Each runs alone (L{TestbedTurns}).  Those that
#: freeze host2's libvirtd (test_hosts, test_migrate, FenceKillTests) disturb
#: only the tests that use host2, all in the first stream with them: the
#: second stream's classes configure the local host alone (C{all_hosts} false,
#: tests/test_xdist_schedule.py checks it).
DISRUPTIVE = (
    "tests/integration/test_storage_reboot.py::",
    "tests/integration/test_faults.py::",
)
#: The two integration streams' work units (L{work_unit}).
STREAMS = ("tests/integration", "tests/integration (second stream)")


def work_unit(nodeid: str, streams: int = 2) -> str:
    """
    What C{--dist loadfile} keeps in one worker, in order, for the test
    C{nodeid}: one of the first C{streams} (1 or 2) of L{STREAMS} for an
    integration test, else its module.
    """
    path = nodeid.split("::", 1)[0]
    if not path.startswith("tests/integration/"):
        return path
    return STREAMS[1] if streams > 1 and nodeid.startswith(SECOND_STREAM) else STREAMS[0]


def disruptive(nodeid: str) -> bool:
    """Whether the test C{nodeid} must have the testbed to itself (L{DISRUPTIVE})."""
    return nodeid.startswith(DISRUPTIVE)


class TestbedTurns:
    """
    The testbed shared by the integration streams of one run: a reader-writer
    lock (C{flock} on C{path}) that a L{disruptive} test holds exclusively,
    any other integration test shared, each from its set-up to its tear-down.
    A gate (C{path}.gate) taken on the way in keeps a waiting disruptive test
    from being starved by the other stream's tests taking the shared lock
    back to back: while it waits (holding the gate), none can start.
    """

    def __init__(self, path: str):
        self.path = path

    @contextlib.contextmanager
    def turn(self, alone: bool):
        with open(self.path + ".gate", "a") as gate, open(self.path, "a") as lock:
            fcntl.flock(gate, fcntl.LOCK_EX)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
            finally:
                fcntl.flock(gate, fcntl.LOCK_UN)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _turns(config) -> TestbedTurns | None:
    """The run's L{TestbedTurns} in an xdist worker (named by the run's uid), else C{None}."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return None
    return TestbedTurns(os.path.join(tempfile.gettempdir(),
                                     f"comet-integration-{workerinput['testrunuid']}.lock"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    turns = _turns(item.config)
    if turns is None or not item.nodeid.startswith("tests/integration/"):
        return (yield)
    began = time.monotonic()
    with turns.turn(alone=disruptive(item.nodeid)):
        # Reported with the test (L{WorkerTimes}): a stream's time is its
        # tests' and its turns' waits.
        item.user_properties.append(("testbed_wait", time.monotonic() - began))
        return (yield)


class WorkerTimes:
    """
    What each xdist worker spent, summed from the reports the controller gets:
    its tests' set-up, call and tear-down, and the waits for testbed turns.
    Said at the end of the run, so that CI's log shows which stream is the
    long one (the run takes as long as it).
    """

    def __init__(self):
        self.tests: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.waits: dict[str, float] = {}

    def pytest_runtest_logreport(self, report):
        node = getattr(report, "node", None)
        if node is None:
            return
        worker = node.gateway.id
        self.seconds[worker] = self.seconds.get(worker, 0.0) + report.duration
        if report.when == "call":
            self.tests[worker] = self.tests.get(worker, 0) + 1
        if report.when == "setup":
            wait = sum(v for k, v in report.user_properties if k == "testbed_wait")
            self.waits[worker] = self.waits.get(worker, 0.0) + wait

    def pytest_terminal_summary(self, terminalreporter):
        if not self.seconds:
            return
        terminalreporter.section("time per worker")
        for worker in sorted(self.seconds):
            terminalreporter.write_line(
                f"{worker}: {self.tests.get(worker, 0)} tests, "
                f"{self.seconds[worker]:.0f} s in them, "
                f"{self.waits.get(worker, 0.0):.0f} s waiting for testbed turns")


def pytest_configure(config):
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(WorkerTimes(), "comet-worker-times")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    # Two integration streams want a third worker for the unit tests; with
    # two workers (-n 2), tests/integration stays one stream, as it was.
    workers = config.getvalue("numprocesses")
    streams = 2 if isinstance(workers, int) and workers >= 3 else 1

    class LoadFileTestbedStreams(LoadScopeScheduling):
        """
        xdist's loadfile, with tests/integration as two files (L{STREAMS}),
        or one with fewer than three workers, handed out first, each to a
        worker of its own.
        """

        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid, streams)

        def _assign_work_unit(self, node) -> None:
            for scope in reversed(STREAMS):
                if scope in self.workqueue:
                    self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return LoadFileTestbedStreams(config, log)


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # (path, line, "Skipped: why")
        return longrepr[2].removeprefix("Skipped: ")
    return str(longrepr)


def _fail_skip(report, what: str) -> None:
    """Turn the skipped C{report} into a failure that gives the skip's reason."""
    reason = _skip_reason(report)
    report.outcome = "failed"
    report.longrepr = (
        f"skipped under CI (CI={os.environ.get('CI')}), where a skip is a failure: {reason}\n"
        f"{what}: install what it needs (scripts/setup, testbed/stack up), or, if this skip\n"
        "is right everywhere, list it in LEGITIMATE_SKIPS in tests/conftest.py, saying why."
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    # Trial's skips (SkipTest in setUp or the test, a C{skip} attribute) reach
    # pytest as skipped reports of the call phase; skip marks as the setup's.
    report = yield
    if (report.skipped and not hasattr(report, "wasxfail") and under_ci()
            and item.nodeid not in LEGITIMATE_SKIPS):
        _fail_skip(report, item.nodeid)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    # A whole module skipped while it is imported (pytest.importorskip, ...).
    report = yield
    if report.skipped and under_ci() and report.nodeid not in LEGITIMATE_SKIPS:
        _fail_skip(report, report.nodeid or "collection")
    return report


def pytest_sessionfinish(session, exitstatus):
    for pool in [o for o in gc.get_objects() if isinstance(o, ThreadPool)]:
        if pool.started and pool.threads:
            sys.stderr.write(f"conftest: stopping thread pool left running: {pool.name or pool!r}\n")
            pool.stop()
