"""
A Comet API for tests: a fresh SQLite file, the real models, and Klein's
in-memory request path (C{treq.testing.StubTreq}), no listening port.
"""

from __future__ import annotations

import json
import os
from typing import Any

import attrs
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from comet.config import Config, HostConfig
from comet.model import Models
from comet.model import make_models as wire_models
from comet.store import Database
from comet.virt import Hypervisors
from comet.web import CometAPI
from comet.web.tasks import target_uri
from tests._conformance import Conformance
from tests.virt._nodes import make_node_xml, node_path
from tests._util import temp_dir


@attrs.frozen
class Answer:
    """What a test request got back."""

    code: int
    headers: Any
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


def temp_database(testcase) -> Database:
    """An open L{Database} in a temporary file that the test removes."""
    db = Database(os.path.join(temp_dir(testcase), "comet.sqlite"))
    db.open()
    testcase.addCleanup(db.close)
    return db


def test_hosts(testcase, sizes=((4, 8192), (8, 16384))) -> tuple[HostConfig, ...]:
    """
    Compute hosts for a test: one libvirt test-driver node per C{(cpus,
    memory MiB)}, each an independent in-process host named C{node1}, ...
    """
    hosts = []
    for i, (cpus, memory) in enumerate(sizes, 1):
        uri = make_node_xml(node_path(testcase), cpus=cpus, memory_mb=memory)
        # storage_address: the initiator address its exports admit (a
        # test-driver node has no network of its own to derive it from).
        hosts.append(HostConfig(name=f"node{i}", uri=uri, domain_type="test",
                                storage_address=f"192.0.2.{i}"))
    return tuple(hosts)


def make_models(
    testcase, hosts=None, db: Database | None = None, clock=reactor, runners=None,
    wrap_hypervisors=None, metrics=None, host_runners=None, **config
) -> Models:
    """
    The real models over a fresh database and real libvirt (test-driver nodes,
    two by default), as the daemon wires them.

    @param runners: storage server address -> runner (e.g. a
        L{comet.remote.FakeRunner} over a L{comet.remote.FakeStorageServer});
        by default none, so configured storage servers must not be used.
    @param wrap_hypervisors: called with the started L{Hypervisors}; what it
        returns is what the models get (e.g. a L{tests.virt._events.LateEvents}).
    @param host_runners: a compute host's ssh address -> runner (e.g. a
        L{comet.remote.fakenet.FakeHostNetwork}) for its private networks.
    @param metrics: the L{comet.metrics.Metrics} (by default a new one), e.g.
        the one given to the runners too.
    """
    if db is None:
        db = temp_database(testcase)
    if hosts is None:
        hosts = test_hosts(testcase)
    cfg = Config(hosts=hosts, **config)
    hypervisors = Hypervisors(reactor, cfg.hosts, cfg.compute)
    hypervisors.startService()
    testcase.addCleanup(hypervisors.stopService)
    if wrap_hypervisors is not None:
        hypervisors = wrap_hypervisors(hypervisors)
    models = wire_models(db, hypervisors, cfg, clock, runners=runners or {},
                         address=target_uri, metrics=metrics, host_runners=host_runners or {})
    return models


def make_token(db_path: str, role: str = "admin", name: str | None = None) -> str:
    """
    A new API token of a user of C{role} (C{test-<role>} unless C{name}),
    made in the database file as C{comet-admin} makes it.
    """
    from comet.admin import connect
    from comet.store import users
    from comet.store import in_transaction

    name = name or f"test-{role}"
    with connect(db_path) as conn:

        def make(conn):
            if users.get_user(conn, name) is None:
                users.add_user(conn, name, role, None)
            return users.create_token(conn, name)[1]

        return in_transaction(conn, make)


def cheap_passwords(testcase) -> None:
    """
    Password hashes made and checked at a low scrypt cost (N=2**10, r=8, p=1)
    for the rest of C{testcase}: a test that sends many passwords tests what
    is done with them, not scrypt (0.6 s of CPU each at the daemon's cost).
    """
    from comet import credentials

    testcase.patch(credentials, "SCRYPT_N", 2**10)
    testcase.patch(credentials, "SCRYPT_R", 8)
    testcase.patch(credentials, "SCRYPT_P", 1)


def bearer(token: str) -> str:
    return f"Bearer {token}"


class APIClient:
    """
    Sends requests to a L{CometAPI} through Klein's in-memory request path.

    @param role: the role whose token every request carries (a user
        C{test-<role>} is made in the API's database); C{None}: no
        credentials.  An C{Authorization} header given to L{request} wins
        (C{None} there: send none).
    @param conformance: check every answer against the OpenAPI document of
        the API's route table (L{tests._conformance}); a test fails on an
        answer the document does not allow.
    """

    def __init__(self, api: CometAPI, role: str | None = "admin", base: str = "http://comet.test",
                 conformance: bool = True):
        self.api = api
        self.base = base
        self._stub = StubTreq(api.resource())
        self.conformance = Conformance(api) if conformance else None
        self.authorization = None
        users = getattr(api.models, "users", None) if role is not None else None
        if users is not None:
            self.authorization = bearer(make_token(users.db.path, role))

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """
        Send C{method path} with C{body} as JSON (or C{raw} bytes as they are)
        and wait for the whole answer.
        """
        headers = dict(headers or {})
        headers.setdefault("Authorization", self.authorization)
        data = raw
        if body is not None:
            data = json.dumps(body).encode("utf-8")
        if body is not None or method in ("POST", "PUT", "DELETE"):
            # As every client must (415 otherwise), a body or not; a test
            # passes Content-Type None to send none.
            headers.setdefault("Content-Type", "application/json")
        headers = {k: v for k, v in headers.items() if v is not None}
        d = self._stub.request(
            method,
            self.base + path,
            data=data,
            headers={k: [v] for k, v in headers.items()},
        )
        response = await self._settle(d)
        content = await self._settle(self._stub.content(response))
        if self.conformance is not None:
            self.conformance.check(method, path, response.code, response.headers, content)
        return Answer(response.code, response.headers, content)

    async def _settle(self, d):
        """
        Pump the in-memory connection until C{d} has a result: handlers wait on
        the database thread, so the answer comes in a later reactor turn.
        """
        outcome = []
        d.addBoth(lambda result: outcome.append(result))
        while not outcome:
            await deferLater(reactor, 0.001, self._stub.flush)
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        return outcome[0]

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body, **kw)

    def delete(self, path, body=None, **kw):
        return self.request("DELETE", path, body, **kw)


def make_client(testcase, models: Models | None = None, role: str | None = "admin") -> APIClient:
    """A client (an admin's, by default) of a fresh API on a fresh database."""
    if models is None:
        models = make_models(testcase)
    return APIClient(CometAPI(models), role)


class FixedIdentity:
    """An authenticator that takes every caller for C{identity} (pipeline tests)."""

    def __init__(self, identity):
        self.identity = identity

    async def identify(self, request):
        return self.identity


def fixed_guard(role: str = "admin"):
    """A guard that admits every caller as a C{role} named C{test}, and audits nothing."""
    from comet.web._auth import Guard, Identity

    return Guard(FixedIdentity(Identity("test", role)))
