"""
JSON-lines logs (C{[log] format = "json"}, L{comet.logs}) of a real C{twistd}
daemon: every line parses, each request yields one event with its fields,
and no token or password is ever written.
"""

import base64
import json
import os

from twisted.trial.unittest import TestCase

from comet import config
from comet.admin import bootstrap
from tests._process import spawn
from tests._util import bearer, http, temp_dir
from tests.test_service import TWISTD, _twistd_env, free_port, write_config

PASSWORD = "correct-horse-battery-staple-9"
WRONG_TOKEN = "comet_" + "f" * 40


class JSONLogTests(TestCase):

    def test_format_checked(self):
        """C{[log] format} is C{text} (the default) or C{json}; anything else is refused."""
        self.assertEqual(config.parse("").log.format, "text")
        self.assertEqual(config.parse('[log]\nformat = "json"\n').log.format, "json")
        with self.assertRaises(config.ConfigError) as e:
            config.parse('[log]\nformat = "xml"\n')
        self.assertIn("log.format", str(e.exception))

    async def test_request_events(self):
        directory = temp_dir(self)
        port = free_port()
        path = write_config(directory, port, '[log]\nformat = "json"\n')
        token = bootstrap(os.path.join(directory, "comet.sqlite"))
        process, done = spawn(TWISTD + ["-n", "--pidfile=", "comet", "--config", path],
                              env=_twistd_env(), path=directory)
        self.addCleanup(lambda: done.called or process.signalProcess("KILL"))
        await TwistdWait(self, port, done).listening()
        base = f"http://127.0.0.1:{port}"
        made = []   # (method, route pattern, status, user, X-Request-Id)

        async def call(method, uri, route, status, user, headers, body=None):
            response = await http().request(method, base + uri, data=body, headers=headers)
            await response.content()
            self.assertEqual(response.code, status)
            made.append((method, route, status, user,
                         response.headers.getRawHeaders("x-request-id")[0]))

        json_body = {b"Content-Type": [b"application/json"], **bearer(token)}
        await call("GET", "/hosts", "/hosts", 200, "admin", bearer(token))
        await call("POST", "/cluster", "/cluster", 201, "admin", json_body, b'{"name": "lab"}')
        await call("GET", "/cluster/lab", "/cluster/<name>", 200, "admin", bearer(token))
        await call("GET", "/cluster/nowhere", "/cluster/<name>", 404, "admin", bearer(token))
        await call("GET", "/cluster", "/cluster", 401, None, bearer(WRONG_TOKEN))
        basic = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
        await call("GET", "/cluster", "/cluster", 401, None,
                   {b"Authorization": [f"Basic {basic}".encode()]})
        await call("GET", "/nothing/here", "(unmatched)", 404, "admin", bearer(token))
        process.signalProcess("TERM")
        outcome = await done
        text = outcome.out.decode("utf-8")
        events = [json.loads(line) for line in text.splitlines()]   # every line parses
        self.assertTrue(any("Comet stopped" in e.get("log_format", "") for e in events))
        requests = [e for e in events if e.get("log_namespace") == "comet.requests"]
        polls = [e for e in requests if e["route"] == "/health"]   # TwistdWait's
        self.assertTrue(polls and all(e["user"] is None for e in polls), polls)
        requests = [e for e in requests if e["route"] != "/health"]
        self.assertEqual(
            [(e["method"], e["route"], e["status"], e["user"], e["request_id"])
             for e in requests], made)
        self.assertEqual(len({e["request_id"] for e in requests}), len(made))
        for e in requests:
            self.assertIsInstance(e["duration"], float)
            self.assertTrue(0 <= e["duration"] < 30)
        for secret in (token, WRONG_TOKEN, PASSWORD, basic):
            self.assertNotIn(secret, text + outcome.err.decode("utf-8", "replace"))


class TwistdWait:
    """Polls a child twistd's /health until it answers."""

    def __init__(self, case, port, done):
        self.case, self.port, self.done = case, port, done

    async def listening(self, timeout: float = 20.0):
        import time

        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.done.called:
                self.case.fail("twistd exited before listening")
            try:
                response = await http().get(f"http://127.0.0.1:{self.port}/health")
                await response.content()
                return
            except Exception:
                await deferLater(reactor, 0.1, lambda: None)
        self.case.fail("twistd did not listen in time")
