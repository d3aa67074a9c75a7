"""
pytest glue for trial TestCases.

Under pytest the reactor never stops, so the shutdown triggers that stop
Twisted thread pools (the reactor's own, adbapi's) never run; a pool whose
non-daemon worker threads are still alive then keeps the interpreter from
exiting after the last test.  Stop every pool still running at the end of the
session, and say which, so that the leak can be found.
"""

import gc
import sys

from twisted.python.threadpool import ThreadPool


def pytest_sessionfinish(session, exitstatus):
    for pool in [o for o in gc.get_objects() if isinstance(o, ThreadPool)]:
        if pool.started and pool.threads:
            sys.stderr.write(f"conftest: stopping thread pool left running: {pool.name or pool!r}\n")
            pool.stop()
