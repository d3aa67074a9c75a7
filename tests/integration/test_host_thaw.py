"""
Issue 17: the daemon died of a general-protection fault in libglib when a
compute host that had been frozen past libvirt's keepalive came back.  The
fault is in libvirt's RPC client (9.0): two threads making calls on one
connection can leave a socket watch behind that points into a thread's dead
stack (see L{comet.virt._sessions}); Comet now gives each call a connection
of its own.

Shown against a libvirtd of the test's own (a session daemon serving the
test driver on a socket in a temporary directory; not the shared testbed,
so no testbed lock): L{tests.integration.thaw_driver} keeps calls of every
kind going while that libvirtd is frozen past a 1 s keepalive and thawed,
twice.  Before the fix the child died at the first thaw (SIGSEGV).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import SkipTest, TestCase

#: Seconds the libvirtd is frozen each time (past the driver's keepalive).
FREEZE = 6
CYCLES = 2


class HostThawTests(TestCase):
    def libvirtd(self) -> tuple[str, int]:
        """A libvirtd of this test's own: its socket URI (test driver) and its PID."""
        binary = shutil.which("libvirtd") or "/usr/sbin/libvirtd"
        if not os.path.exists(binary):
            raise SkipTest("libvirtd is not installed")
        home = tempfile.mkdtemp(prefix="comet-thaw-")
        self.addCleanup(shutil.rmtree, home, True)
        run = os.path.join(home, "run")
        os.mkdir(run)
        env = {"HOME": home, "XDG_RUNTIME_DIR": run, "XDG_CONFIG_HOME": f"{home}/config",
               "XDG_CACHE_HOME": f"{home}/cache", "PATH": "/usr/sbin:/usr/bin:/bin"}
        argv = [binary]
        if os.geteuid() == 0:
            # A session daemon, as an unprivileged user: not the machine's.
            os.chown(home, 65534, 65534)
            os.chown(run, 65534, 65534)
            argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
        log = open(os.path.join(home, "libvirtd.log"), "wb")
        self.addCleanup(log.close)
        daemon = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

        def stop():
            os.kill(daemon.pid, signal.SIGCONT)
            daemon.terminate()
            daemon.wait(10)

        self.addCleanup(stop)
        socket = os.path.join(run, "libvirt", "libvirt-sock")
        end = time.monotonic() + 30
        while not os.path.exists(socket):
            if daemon.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"libvirtd did not start: {open(log.name).read()}")
            time.sleep(0.05)
        return f"test+unix:///default?socket={socket}", daemon.pid

    def test_frozen_host_comes_back(self):
        """
        Calls going on while the host freezes past the keepalive and thaws,
        twice: the process lives, and the host is connected again each time.
        """
        uri, pid = self.libvirtd()
        child = subprocess.run(
            [sys.executable, "-m", "tests.integration.thaw_driver", uri, str(pid),
             str(FREEZE), str(CYCLES)],
            capture_output=True, text=True, timeout=120,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        )
        self.assertEqual(child.returncode, 0, child.stderr[-4000:])
        self.assertEqual(child.stdout.split("\n")[:CYCLES],
                         [f"cycle {n} connected" for n in range(CYCLES)])
