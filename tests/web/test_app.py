"""Tests for L{comet.web._app}: what the Klein app adds around the pipeline."""

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from comet.web import CometAPI, api_routes
from comet.web._app import _shielded
from comet.web._table import Response
from tests._api import APIClient, fixed_guard, make_client, make_models


class ShieldedTests(TestCase):
    def test_cancel_does_not_reach_the_work(self):
        """Cancelling the answer fails only the answer; the work runs to its end."""
        work = Deferred(lambda d: self.fail("the work was cancelled"))
        answer = _shielded(work)
        answer.cancel()
        self.failureResultOf(answer, CancelledError)
        work.callback("done")   # no AlreadyCalledError
        self.assertIsNone(self.successResultOf(work))

    def test_result_passes(self):
        work = Deferred()
        answer = _shielded(work)
        work.callback("done")
        self.assertEqual(self.successResultOf(answer), "done")


class OwnTableTests(TestCase):
    """Each app has its own route table, as Klein binds an app to each instance."""

    def test_two_apps_two_tables(self):
        """Two apps in one process share no table; each table has the whole API."""
        first = CometAPI(object(), guard=fixed_guard())
        second = CometAPI(object(), guard=fixed_guard())
        self.assertIsNot(first.routes, second.routes)
        self.assertEqual([(e.method, e.path) for e in first.routes.endpoints],
                         [(e.method, e.path) for e in second.routes.endpoints])
        self.assertIn(("GET", "vm"), [(e.method, e.path) for e in first.routes.endpoints])

    async def test_added_route_is_one_apps(self):
        """
        A route added to one app's table is served and documented by that
        app only: its own /openapi.json lists it, the other's does not.
        """
        table = api_routes()
        table.path("thing", "/thing")

        async def thing(models, request, body):
            """A thing."""
            return Response({"thing": 1})

        table.route("GET", "thing", answers={200: {"type": "object"}}, role="viewer")(thing)
        extended = APIClient(CometAPI(object(), table, fixed_guard()))
        plain = APIClient(CometAPI(object(), guard=fixed_guard()))
        self.assertEqual((await extended.get("/thing")).json, {"thing": 1})
        self.assertEqual((await plain.get("/thing")).code, 404)
        self.assertIn("/thing", (await extended.get("/openapi.json")).json["paths"])
        self.assertNotIn("/thing", (await plain.get("/openapi.json")).json["paths"])


class _Sender(Protocol):
    def __init__(self, data: bytes, sent: Deferred):
        self.data, self.sent = data, sent

    def connectionMade(self):
        self.transport.write(self.data)
        self.sent.callback(self.transport)


class DisconnectTests(TestCase):
    """A client that hangs up while its change request runs."""

    async def test_change_runs_to_its_end(self):
        models = make_models(self)
        client = make_client(self, models)
        gate = Deferred()
        reached = []
        create = models.clusters.create

        async def slow_create(*args, **kw):
            reached.append(True)
            await gate
            return await create(*args, **kw)

        models.clusters.create = slow_create
        port = reactor.listenTCP(0, Site(CometAPI(models).resource()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        body = b'{"name": "lab"}'
        request = (
            b"POST /cluster HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: " + client.authorization.encode() + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        sent = Deferred()
        factory = ClientFactory.forProtocol(lambda: _Sender(request, sent))
        reactor.connectTCP("127.0.0.1", port.getHost().port, factory)
        transport = await sent
        # Wait until the handler is waiting on the gate, then hang up.
        for _ in range(200):
            if reached:
                break
            await _later(0.01)
        self.assertTrue(reached, "the handler never ran")
        transport.loseConnection()
        await _later(0.1)
        gate.callback(None)
        await _later(0.1)
        self.assertEqual([c.name for c in await models.clusters.list()], ["lab"])


def _later(seconds: float) -> Deferred:
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)
