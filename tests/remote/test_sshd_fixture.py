"""
The loopback sshd the runner's tests use (L{tests.remote._sshd}): it accepts
connections once C{start} returns, C{stop} ends it with its sessions, and a
test process killed outright takes it along.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from twisted.trial.unittest import SkipTest, TestCase

from tests.remote import _sshd
from tests.test_service import REPO


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return True
    except OSError:
        return False


class LocalSSHServerTests(TestCase):
    def setUp(self):
        why = _sshd.missing()
        if why:
            raise SkipTest(why)
        self.sshd = _sshd.LocalSSHServer()
        self.addCleanup(shutil.rmtree, self.sshd.directory, True)

    def test_accepts_once_started_and_stop_ends_its_sessions(self):
        """A connection right after C{start} is accepted; C{stop} ends the session's processes."""
        self.sshd.start()
        self.addCleanup(self.sshd.stop)
        self.assertTrue(_accepts(self.sshd.port))
        config = self.sshd.server_config()
        session = subprocess.Popen(
            ["ssh", "-i", config.ssh_identity, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
             "-o", f"UserKnownHostsFile={config.ssh_known_hosts}", "-p", str(config.ssh_port),
             f"{config.ssh_user}@127.0.0.1", "sleep 120"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(session.wait)
        self.addCleanup(session.kill)
        deadline = time.monotonic() + 60
        while self.sshd.accepted() < 1 or not _sshd.children(self.sshd.process.pid):
            self.assertLess(time.monotonic(), deadline, "the session did not start")
            time.sleep(0.1)
        sessions = _sshd.children(self.sshd.process.pid)
        self.sshd.stop()
        self.assertFalse(_sshd.alive(self.sshd.process.pid))
        self.assertEqual([pid for pid in sessions if _sshd.alive(pid)], [])
        self.assertFalse(_accepts(self.sshd.port))

    def test_gone_with_a_killed_test_process(self):
        """A test process killed (SIGKILL, no clean-up) leaves no sshd listening."""
        child = subprocess.run(
            [sys.executable, "-c",
             "import os, sys\n"
             "from tests.remote._sshd import LocalSSHServer\n"
             f"server = LocalSSHServer()\n"
             "server.start()\n"
             "print(server.port, server.directory, flush=True)\n"
             "os.kill(os.getpid(), 9)\n"],
            cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
            timeout=120)
        self.assertEqual(child.returncode, -signal.SIGKILL, child.stderr)
        port, directory = child.stdout.split()
        self.addCleanup(shutil.rmtree, directory, True)
        deadline = time.monotonic() + 15
        while _accepts(int(port)):
            self.assertLess(time.monotonic(), deadline, "sshd still listens after its test died")
            time.sleep(0.1)
