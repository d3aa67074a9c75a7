"""
Following a task: the progress bar through a task's intermediate states, a
failed task's exit code, and Ctrl-C, which stops the waiting and not the
task.  A real daemon's tasks on the test driver end at once
(L{tests.client.test_commands} follows those); here a small fake of the
task endpoint, beside them, holds a task running as long as a test needs.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from twisted.trial.unittest import SynchronousTestCase

from tests.client._cli import Comet


class _Tasks(BaseHTTPRequestHandler):
    """C{GET /tasks/7}: the next of the server's C{states} each time (the last one stays)."""

    def do_GET(self):
        server = self.server
        server.requests.append((self.command, self.path, self.headers.get("Authorization")))
        if self.path != "/tasks/7":
            self.send_error(404)
            return
        state = server.states[min(server.served, len(server.states) - 1)]
        server.served += 1
        body = json.dumps({"id": 7, "target_uri": "/cluster/lab", "created": 1, "updated": 1,
                           "href": "/tasks/7", **state}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, *args):
        pass


class FollowTests(SynchronousTestCase):
    def serve(self, *states: dict) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Tasks)
        server.states, server.served, server.requests = list(states), 0, []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return server

    def comet(self, server) -> Comet:
        return Comet(self, f"http://127.0.0.1:{server.server_address[1]}", "comet_t")

    def test_progress_to_the_end(self):
        """The bar follows progress and message to the task's end; the outcome is printed."""
        server = self.serve(
            {"status": "running", "progress": 10, "message": "downloading"},
            {"status": "running", "progress": 60, "message": "downloading: 60 of 100 MB"},
            {"status": "finished", "progress": 100, "message": "volume 'v' made"},
        )
        done = self.comet(server)("task", "wait", "7")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.strip(), "task 7 finished: volume 'v' made")
        self.assertRegex(done.stderr, r"task 7 .*100%.*volume 'v' made")
        self.assertEqual(server.served, 3)
        self.assertEqual({r[2] for r in server.requests}, {"Bearer comet_t"})

    def test_long_message_keeps_the_bar(self):
        """
        A message longer than the terminal is cut, not the bar: the task's
        number, the bar and its percentage stay on the line (a volume
        download's message, in the newcomer's session, left only "t…").
        """
        message = ("volume 'guest-base' (1073741824 bytes) created in storage pool 'pool1' from"
                   " http://127.0.0.1:59989/comet-guest.img (67108864 bytes)")
        server = self.serve({"status": "running", "progress": 50, "message": "downloading " + "x" * 150},
                            {"status": "finished", "progress": 100, "message": message})
        done = self.comet(server)("task", "wait", "7", env={"COLUMNS": "110"})
        self.assertEqual(done.returncode, 0, done.stderr)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        self.assertRegex(lines[-1], r"^task 7 ━{10,} 100% \d+:\d\d:\d\d volume 'guest-base' .*…$")
        self.assertLessEqual(max(len(line) for line in lines), 110, lines)
        # The outcome, whole, on standard output.
        self.assertEqual(" ".join(done.stdout.split()), f"task 7 finished: {message}")

    def test_failed_task_exits_1(self):
        server = self.serve(
            {"status": "running", "progress": None, "message": "stopping"},
            {"status": "failed", "progress": 30, "message": "host 'h' does not answer"},
        )
        done = self.comet(server)("task", "wait", "7", "--json")
        self.assertEqual(done.returncode, 1, done.stderr)
        self.assertEqual(json.loads(done.stdout)["status"], "failed")

    def test_ctrl_c_stops_waiting_only(self):
        """SIGINT while waiting: exit 130, how to follow again, and no request that touches the task."""
        server = self.serve({"status": "running", "progress": 40, "message": "copying"})
        comet = self.comet(server)
        process = comet.popen("task", "wait", "7")
        deadline = time.monotonic() + 30
        while server.served < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreaterEqual(server.served, 2, "comet never polled the task")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        self.assertEqual(process.returncode, 130, err)
        self.assertIn("Stopped waiting; task 7 goes on. Follow it with: comet task wait 7", err)
        self.assertEqual({r[0] for r in server.requests}, {"GET"})
