"""
pytest glue for trial TestCases.

Under CI (C{CI=true} in the environment, as C{.ci/run} and CI services set it) a
skipped test is a failure that says why it was skipped: a test that skips
because something it needs is missing (Chromium, the testbed, sshd) proves
nothing, and a green run must not hide that.  Skips legitimate everywhere, CI
included, are listed in L{LEGITIMATE_SKIPS}.  Without C{CI}, tests skip as
usual, saying why (C{-rs}).

With pytest-xdist, C{--dist loadfile} (C{scripts/test} runs C{-n 2 --dist
loadfile}) shares the tests out to the workers a module at a time, as
xdist's own loadfile does, but with every integration test in one unit
(L{pytest_xdist_make_scheduler}): they run in one worker, one after another,
in their usual order, as without xdist, for they share the testbed's storage
servers and some stop or reboot them.  The unit tests run in the other worker
meanwhile, a module's tests in one process as they always were.

Under pytest the reactor never stops, so the shutdown triggers that stop
Twisted thread pools (the reactor's own, adbapi's) never run; a pool whose
non-daemon worker threads are still alive then keeps the interpreter from
exiting after the last test.  Stop every pool still running at the end of the
session, and say which, so that the leak can be found.
"""

import gc
import os
import sys

import pytest
from twisted.python.threadpool import ThreadPool

#: Tests (pytest node ids, relative to the repository) that may be skipped
#: even under CI, each with why that is right everywhere.  None today.
LEGITIMATE_SKIPS: dict[str, str] = {}


def under_ci() -> bool:
    """Whether this run is CI's: C{CI} set to true (or 1, or yes)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def work_unit(nodeid: str) -> str:
    """
    What C{--dist loadfile} keeps in one worker, in order, for the test
    C{nodeid}: C{tests/integration} for an integration test, else its module.
    """
    path = nodeid.split("::", 1)[0]
    return "tests/integration" if path.startswith("tests/integration/") else path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class LoadFileTestbedOnce(LoadScopeScheduling):
        """xdist's loadfile, with all of tests/integration as one file."""

        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return LoadFileTestbedOnce(config, log)


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
