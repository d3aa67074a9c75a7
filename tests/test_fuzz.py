"""
Schemathesis against a live daemon: C{twistd -n comet} on the embedded
default (one host on C{test:///default}, no storage), fuzzed through its own
C{/openapi.json}.  No request may answer a 5xx, and every answer must follow
the document (status code, media type, body schema).

The run is bounded (L{MAX_EXAMPLES} cases per operation, one worker, a fixed
L{SEED}), so it is the same run each time and takes well under two minutes.
Before it, a few resources are made (a running VM, a stopped one, templates, a
spare cluster) and the path parameters of the operations on them are pinned
there, so generated bodies reach the handlers and not only a 404; the
operations that destroy or rename (DELETE, PUT) are pinned to spares, so they
do not take the others' targets away half way through.  Every request
carries the first admin's token (L{credentials}), so no operation is refused
for want of a role.

Schemathesis runs as a child process (its CLI, through C{spawnProcess}), so
the reactor is never blocked while it works and its own threads and event
loop stay out of this process.
What it found while this was built is kept as regression tests beside the
code it was in (C{tests/web/}).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from comet.admin import bootstrap
from comet.config import StorageConfig
from tests._process import run, spawn
from tests._util import http, temp_dir
from tests.test_service import TWISTD, _twistd_env, free_port, write_config

#: Headers every request of the run carries (the seeding ones too), besides
#: the credentials of L{credentials}.
HEADERS: dict[str, str] = {}


def credentials(token: str) -> dict[str, str]:
    """The headers that authenticate the run: an admin's token, so every operation is allowed."""
    return {"Authorization": f"Bearer {token}"}

#: What schemathesis checks on every answer.  positive_data_acceptance: a
#: request the document calls valid is not refused as bad input (400): the
#: request schemas state the models' bounds.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "positive_data_acceptance",
)

#: The fixed seed and bound of the CI run; C{COMET_FUZZ_SEED} and
#: C{COMET_FUZZ_EXAMPLES} override them for a longer or different run by hand.
SEED = int(os.environ.get("COMET_FUZZ_SEED", "20261127"))
MAX_EXAMPLES = int(os.environ.get("COMET_FUZZ_EXAMPLES", "15"))

#: Seconds the whole schemathesis run may take before it is killed: a
#: watchdog against a hang, not a speed limit (speed is bench/'s business).
#: Generous, since under `scripts/test` the unit tests share the two cores with
#: the integration half and its emulated VMs (a run took 105 s of 150 there).
RUN_TIMEOUT = int(os.environ.get("COMET_FUZZ_TIMEOUT", max(600, 40 * MAX_EXAMPLES)))

#: Extra checks for a run by hand (comma-separated schemathesis check names).
EXTRA_CHECKS = [c for c in os.environ.get("COMET_FUZZ_CHECKS", "").split(",") if c]

_ST = [sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()"]

_DESTRUCTIVE = ["DELETE", "PUT"]

#: Path parameters pinned to the resources L{FuzzTests._seed} makes; the first
#: entry that matches an operation applies.
PINS = [
    {
        "include-path-regex": r"^/cluster/\{cluster\}/vms/\{name\}$",
        "include-method": _DESTRUCTIVE,
        "parameters": {"path.cluster": "spare", "path.name": "victim"},
    },
    {
        "include-path-regex": r"^/cluster/\{cluster\}/vms/\{name\}",
        "parameters": {"path.cluster": "lab", "path.name": "run-1"},
    },
    {
        "include-path-regex": r"^/cluster/\{cluster\}/vms$",
        "parameters": {"path.cluster": "lab"},
    },
    {
        "include-path-regex": r"^/cluster/\{name\}$",
        "include-method": _DESTRUCTIVE,
        "parameters": {"path.name": "spare"},
    },
    {"include-path-regex": r"^/cluster/\{name\}", "parameters": {"path.name": "lab"}},
    {
        "include-path-regex": r"^/templates/\{name\}$",
        "include-method": _DESTRUCTIVE,
        "parameters": {"path.name": "spare-tpl"},
    },
    {"include-path-regex": r"^/templates/\{name\}", "parameters": {"path.name": "small"}},
    {"include-path-regex": r"^/hosts/\{name\}", "parameters": {"path.name": "local"}},
    # A stream never ends by itself: each call of the run ends at once (after
    # its headers and any resumed events); its filters are fuzzed all the same.
    {"include-path-regex": r"^/events$", "parameters": {"query.timeout": 0}},
]


def _toml_value(value) -> str:
    # JSON strings, numbers and lists are valid TOML values; tables are inline.
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


def schemathesis_config(headers: dict[str, str], pins: list[dict]) -> str:
    """The C{schemathesis.toml} of the run: the headers and the pinned operations."""
    lines = [f"headers = {_toml_value(headers)}", ""]
    for pin in pins:
        lines.append("[[operations]]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in pin.items())
        lines.append("")
    return "\n".join(lines)


class ConfigTests(TestCase):
    """The schemathesis configuration the run writes."""

    def test_headers_and_pins(self):
        """Headers apply to every request; each pin is one [[operations]] entry, in order."""
        import tomllib

        text = schemathesis_config({"Authorization": 'Bearer a"b'}, PINS)
        parsed = tomllib.loads(text)
        self.assertEqual(parsed["headers"], {"Authorization": 'Bearer a"b'})
        self.assertEqual(parsed["operations"], PINS)


class FuzzTests(TestCase):
    """The whole API, fuzzed on a live daemon."""

    #: Trial's own limit (120 s by default) must not cut the run short.
    timeout = RUN_TIMEOUT + 60

    def setUp(self):
        if importlib.util.find_spec("schemathesis") is None:
            raise self.skipTest("schemathesis is not installed (pip install -e '.[test]')")

    async def _wait_listening(self, base, done, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done.called:
                self.fail("twistd exited before listening")
            try:
                response = await http().get(f"{base}/cluster", headers=self._headers())
                await response.content()
                return
            except Exception:
                await deferLater(reactor, 0.1, lambda: None)
        self.fail("twistd did not listen in time")

    #: L{HEADERS} and the credentials of the run's admin (set by each test).
    headers: dict[str, str] = HEADERS

    def _headers(self):
        return {name.encode(): [value.encode()] for name, value in self.headers.items()}

    async def _call(self, base, method, path, body=None, expect=(200, 201, 202)):
        headers = self._headers()
        data = None
        if method in ("POST", "PUT", "DELETE"):
            headers[b"Content-Type"] = [b"application/json"]   # 415 without, a body or not
        if body is not None:
            data = json.dumps(body).encode()
        response = await http().request(method, base + path, data=data, headers=headers)
        content = await response.content()
        self.assertIn(response.code, expect, f"{method} {path}: {content!r}")
        return json.loads(content) if content else None

    async def _seed(self, base):
        """Resources for the pinned operations to act on."""
        await self._call(base, "POST", "/templates", {"name": "small", "memory": 128, "cpus": 1})
        await self._call(base, "POST", "/templates", {"name": "spare-tpl", "memory": 128})
        await self._call(base, "POST", "/cluster", {"name": "lab"})
        await self._call(base, "POST", "/cluster", {"name": "spare"})
        await self._call(base, "POST", "/cluster/lab/vms", {"template": "small", "name": "run-1"})
        await self._call(base, "POST", "/cluster/lab/vms", {"template": "small", "name": "off-1"})
        await self._call(base, "POST", "/cluster/spare/vms", {"template": "small", "name": "victim"})
        vm = await self._call(base, "POST", "/cluster/lab/vms/run-1/start")
        self.assertEqual(vm["state"], "running")
        # Task 1, for /tasks/{id}.
        task = await self._call(base, "POST", "/cluster/spare/stop")
        self.assertEqual(task["id"], 1)

    async def _schemathesis(self, directory, base, pins, *extra):
        """Run schemathesis on C{base}; its L{tests._process.Outcome}."""
        config = os.path.join(directory, "schemathesis.toml")
        with open(config, "w") as f:
            f.write(schemathesis_config(self.headers, pins))
        return await run(
            _ST + [
                "--config-file", config,
                "run", f"{base}/openapi.json",
                "--checks", ",".join(CHECKS + tuple(EXTRA_CHECKS)),
                "--max-examples", str(MAX_EXAMPLES),
                "--seed", str(SEED),
                "--workers", "1",
                "--phases", "coverage,fuzzing,stateful",
                "--generation-database", "none",
                "--request-timeout", "20",
                "--no-color",
                *extra,
            ],
            env=_twistd_env(),
            path=directory,
            timeout=RUN_TIMEOUT,
        )

    def _assert_passed(self, outcome, log=""):
        report = outcome.out.decode("utf-8", "replace")
        self.assertEqual(
            outcome.code,
            0,
            f"schemathesis failed:\n{report[-20000:]}\n{outcome.err.decode()[-4000:]}"
            f"\n--- daemon log ---\n{log[-20000:]}",
        )
        self.assertIn("passed", report)

    async def test_no_server_error_and_schema_conformance(self):
        directory = temp_dir(self)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        argv = TWISTD + ["-n", "--pidfile=", "comet", "--config", write_config(directory, port)]
        # The first admin, made as `comet-admin bootstrap` makes it, in the daemon's database.
        self.headers = {**HEADERS, **credentials(bootstrap(os.path.join(directory, "comet.sqlite")))}
        daemon, ended = spawn(argv, env=_twistd_env(), path=directory)
        self.addCleanup(lambda: ended.called or daemon.signalProcess("KILL"))
        await self._wait_listening(base, ended)
        await self._seed(base)

        outcome = await self._schemathesis(directory, base, PINS)
        daemon.signalProcess("TERM")
        stopped = await ended
        daemon_log = stopped.out.decode("utf-8", "replace")
        self._assert_passed(outcome, daemon_log)
        # The run reached the operations: no failures, and no internal error logged.
        self.assertNotIn("internal error while serving a request", daemon_log)


#: Path parameters of the storage run (L{FuzzTests.test_storage}).
STORAGE_PINS = [
    {"include-path-regex": r"^/storageservers/\{host\}", "parameters": {"path.host": "s1"}},
    {
        "include-path-regex": r"^/storagepools/\{name\}$",
        "include-method": "DELETE",
        "parameters": {"path.name": "spare"},
    },
    {"include-path-regex": r"^/storagepools/\{name\}", "parameters": {"path.name": "pool1"}},
    {
        "include-path-regex": r"^/storagepools/\{pool\}/storagevolumes/\{volume\}$",
        "include-method": "DELETE",
        "parameters": {"path.pool": "pool1", "path.volume": "victim"},
    },
    {
        "include-path-regex": r"^/storagepools/\{pool\}",
        "parameters": {"path.pool": "pool1", "path.volume": "v1"},
    },
    {
        "include-path-regex": r"^/cluster/\{cluster\}/vms/\{name\}/storages/\{zvol\}$",
        "include-method": "DELETE",
        "parameters": {"path.cluster": "lab", "path.name": "off-1", "path.zvol": "victim2"},
    },
    {
        "include-path-regex": r"^/cluster/\{cluster\}/vms/\{name\}/snapshots/\{snapshot\}$",
        "include-method": "DELETE",
        "parameters": {"path.cluster": "lab", "path.name": "off-1", "path.snapshot": "spare"},
    },
    {
        "include-path-regex": r"^/cluster/\{cluster\}/vms/\{name\}/",
        "parameters": {
            "path.cluster": "lab", "path.name": "off-1", "path.zvol": "data1", "path.snapshot": "s1",
        },
    },
]


class _NoNetwork:
    """
    The reactor of the storage run's downloads: the real one, except that no
    name resolves and no connection opens, so nothing leaves this machine
    (the download policy itself would let a public address through).
    """

    def __init__(self, reactor):
        self._reactor = reactor
        self.nameResolver = self

    def __getattr__(self, name):
        return getattr(self._reactor, name)

    def resolveHostName(self, receiver, hostName, portNumber=0, addressTypes=None,
                        transportSemantics="TCP"):
        receiver.resolutionBegan(None)
        receiver.resolutionComplete()
        return receiver

    def connectTCP(self, host, port, *args, **kw):
        raise ConnectionRefusedError(f"no network in the fuzz run ({host}:{port})")


class StorageFuzzTests(FuzzTests):
    """
    The storage operations, which the embedded default has no server for:
    the real API and models in this process, over two in-memory storage
    servers (L{comet.remote.FakeStorageServer}) and test-driver hosts, on a
    real port, fuzzed by schemathesis in a child process.
    """

    async def test_no_server_error_and_schema_conformance(self):
        from twisted.web.server import Site

        from comet.web import CometAPI
        from tests._api import make_token
        from tests.web.test_storage import storage_models

        models = storage_models(self)
        from comet.model.downloads import Downloads

        models.storage.downloads = Downloads(_NoNetwork(reactor), StorageConfig())
        self.headers = {**HEADERS, **credentials(make_token(models.users.db.path))}
        site = Site(CometAPI(models).resource())
        site.timeOut = None  # no idle-connection timer left behind
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        base = f"http://127.0.0.1:{port.getHost().port}"
        await self._seed(base)
        await self._call(base, "POST", "/storagepools", {"name": "spare", "server": "s2", "dataset": "tank/spare"})
        for volume in ("v1", "victim", "data1", "victim2"):
            task = await self._call(
                base, "POST", "/storagepools/pool1/storagevolumes", {"name": volume, "capacity": 1}
            )
            await models.tasks.wait(task["id"])
        for volume in ("data1", "victim2"):
            await self._call(
                base, "POST", "/cluster/lab/vms/off-1/storages", {"pool": "pool1", "vol": volume}
            )
        for snapshot in ("s1", "spare"):
            await self._call(base, "POST", "/cluster/lab/vms/off-1/snapshots", {"name": snapshot})

        outcome = await self._schemathesis(
            temp_dir(self), base, STORAGE_PINS,
            "--include-path-regex", "^/storage|/storages|/snapshots",
        )
        # Let the tasks the run started end before the models go away.
        for task in await models.tasks.list("running"):
            await models.tasks.wait(task.id)
        self._assert_passed(outcome)
