"""
The real C{comet} against a real daemon: C{comet events}, C{comet vm list
--watch}, and C{comet login} with a password (a token that expires, the
password not kept).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time

from tests.client._cli import PASSWORD, Comet
from tests.client.test_commands import DaemonCase


def _until_exit(process: subprocess.Popen, act, timeout: float = 60.0) -> tuple[str, str]:
    """Call C{act(i)} again and again (i = 0, 1, ...) until C{process} exits; its output."""
    deadline = time.monotonic() + timeout
    i = 0
    while process.poll() is None and time.monotonic() < deadline:
        act(i)
        i += 1
        time.sleep(0.2)
    if process.poll() is None:
        process.kill()
    out, err = process.communicate(timeout=30)
    return out, err


class EventCommandTests(DaemonCase):
    def popen(self, comet: Comet, *args: str) -> subprocess.Popen:
        process = comet.popen(*args)
        self.addCleanup(lambda: process.poll() is None and process.kill())
        return process

    def test_events_json(self):
        """C{comet events --json} prints each event as the API sends it; filters apply."""
        comet = self.comet()
        process = self.popen(comet, "events", "--type", "cluster.created", "--resource",
                             "/cluster/ev", "--count", "1", "--json")

        def act(i):
            # Until the command has connected and seen one: other clusters
            # (filtered out), and "ev" made (and deleted, to be made again).
            self.daemon.api("POST", "/cluster", {"name": f"ev-other-{i}"})
            self.assertEqual(self.daemon.api("POST", "/cluster", {"name": "ev"})[0], 201)
            self.assertEqual(self.daemon.api("DELETE", "/cluster/ev", {})[0], 204)

        out, err = _until_exit(process, act)
        self.assertEqual(process.returncode, 0, err)
        (line,) = out.splitlines()
        event = json.loads(line)
        self.assertEqual((event["type"], event["href"]), ("cluster.created", "/cluster/ev"))
        self.assertRegex(event["id"], r"^[0-9]+-[0-9]+$")

    def test_events_table(self):
        comet = self.comet()
        process = self.popen(comet, "events", "--type", "cluster", "--count", "1")
        out, err = _until_exit(process, lambda i: self.daemon.api(
            "POST", "/cluster", {"name": f"evt-{i}"}))
        self.assertEqual(process.returncode, 0, err)
        self.assertRegex(out, r"cluster\.created +/cluster/evt-[0-9]+")

    def test_bad_filter(self):
        done = self.comet()("events", "--type", "nope")
        self.assertExit(done, 1)
        self.assertIn("no event type", done.stderr)

    def test_vm_list_watch(self):
        """C{comet vm list --watch} draws the list, and again when a VM changes."""
        self.made("watched/w-1")
        comet = self.comet()
        process = self.popen(comet, "vm", "list", "watched", "--watch", "--json")
        first = json.loads(process.stdout.readline())   # drawn once the stream is open
        self.assertEqual([(vm["name"], vm["state"]) for vm in first], [("w-1", "shutoff")])
        code, answer = self.daemon.api("POST", "/cluster/watched/vms/w-1/start", {})
        self.assertEqual(code, 200, answer)
        # Redrawn on the VM's events (its state among them).
        while True:
            line = process.stdout.readline()
            self.assertTrue(line, "the command ended without redrawing")
            if [vm["state"] for vm in json.loads(line)] == ["running"]:
                break
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        self.assertEqual(process.returncode, 130)


class PasswordLoginTests(DaemonCase):
    def test_password_exchanged_for_a_token(self):
        """C{comet login URL}: user and password asked, a token that expires kept 0600, no password."""
        comet = Comet(self)
        done = comet("login", self.daemon.url, stdin=f"alice\n{PASSWORD}\n")
        self.assertExit(done, 0)
        self.assertEqual(stat.S_IMODE(os.stat(comet.login_file).st_mode), 0o600)
        with open(comet.login_file) as f:
            stored = json.load(f)
        self.assertNotIn(PASSWORD, json.dumps(stored))
        self.assertEqual(stored["url"], self.daemon.url)
        self.assertTrue(stored["token"].startswith("comet_"))
        self.assertEqual(comet.json("cluster", "list"), self.daemon.get("/cluster"))
        audit = self.daemon.get("/auditlog")
        self.assertIn(("alice", "POST", "/login", 200),
                      [(e["user"], e["method"], e["uri"], e["status"]) for e in audit])

    def test_wrong_password(self):
        comet = Comet(self)
        done = comet("login", self.daemon.url, stdin="alice\nnot it\n")
        self.assertExit(done, 1)
        self.assertIn("login refused", done.stderr)
        self.assertFalse(os.path.exists(comet.login_file))
