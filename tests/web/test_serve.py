"""
The contract's rules for every endpoint, through the in-memory request path:
each error status with its JSON body, media types, body validation and names.
"""

from twisted.trial.unittest import TestCase

from comet.errors import CommandFailed, Conflict, InvalidInput, NotFound, Unavailable
from comet.web import CometAPI
from comet.web._schemas import NAME, obj
from comet.web._serve import describe
from comet.web._table import Response, RouteTable
from tests._api import APIClient, fixed_guard, make_client


def assertError(testcase, answer, code, word, reason_part=""):
    """C{answer} is the contract's JSON error with C{code} and C{word}."""
    testcase.assertEqual(answer.code, code, answer.body)
    testcase.assertEqual(answer.header("content-type"), "application/json; charset=utf-8")
    testcase.assertEqual(set(answer.json), {"code", "error", "reason"})
    testcase.assertEqual(answer.json["code"], code)
    testcase.assertEqual(answer.json["error"], word)
    testcase.assertIn(reason_part, answer.json["reason"])


class _Boom(Exception):
    pass


def _table() -> RouteTable:
    """A small route table whose handlers raise each kind of error on demand."""
    table = RouteTable()
    table.path("things", "/things")
    table.path("thing", "/things/<name>")
    table.path("thing.poke", "/things/<name>/poke")
    raising = {
        "missing": NotFound("thing 'missing' does not exist"),
        "busy": Conflict("thing 'busy' is running; power it off first"),
        "bad": InvalidInput("thing 'bad' cannot be that"),
        "away": Unavailable("compute host 'h1' does not answer"),
        "broken": CommandFailed(["zfs", "list"], 1, "no such pool", "10.0.0.1"),
        "bug": _Boom("secret internal detail"),
    }

    @table.route("GET", "things")
    async def list_things(models, request, body):
        return [{"name": "a", "href": table.href("thing", name="a")}]

    @table.route("POST", "things", obj(("name",), name=NAME, size={"type": "integer", "minimum": 1}))
    async def create_thing(models, request, body):
        href = table.href("thing", name=body["name"])
        return Response(dict(body, href=href), 201, {"Location": href})

    @table.route("GET", "thing")
    async def get_thing(models, request, body, name):
        if name in raising:
            raise raising[name]
        return {"name": name, "actions": table.actions("thing", ["poke"], name=name)}

    @table.route("DELETE", "thing", obj(force={"type": "boolean"}))
    async def delete_thing(models, request, body, name):
        models.append(("delete", name, body))
        return Response(code=204)

    @table.route("POST", "thing.poke", obj())
    async def poke(models, request, body, name):
        return {"name": name, "poked": True}

    return table


class ErrorRulesTests(TestCase):
    """Every failure answers the contract's JSON error body."""

    def setUp(self):
        self.calls = []
        self.client = APIClient(CometAPI(self.calls, _table(), fixed_guard()))

    async def test_unknown_uri(self):
        """An unknown URI is a 404 that names it."""
        assertError(self, await self.client.get("/nowhere"), 404, "not_found", "/nowhere")

    async def test_method_not_allowed(self):
        """A method the path lacks is a 405 with an C{Allow} header."""
        answer = await self.client.request("PATCH", "/things/a")
        assertError(self, answer, 405, "method_not_allowed", "PATCH")
        self.assertEqual(answer.header("allow"), "DELETE, GET, HEAD")

    async def test_not_acceptable(self):
        """An C{Accept} that excludes JSON is a 406."""
        answer = await self.client.get("/things", headers={"Accept": "text/html"})
        assertError(self, answer, 406, "not_acceptable")

    async def test_acceptable_ranges(self):
        """C{*/*}, C{application/*} and a JSON range with a weight are accepted."""
        for accept in ["*/*", "application/*", "text/html, application/json;q=0.5"]:
            answer = await self.client.get("/things", headers={"Accept": accept})
            self.assertEqual(answer.code, 200, accept)

    async def test_zero_weight_is_refused(self):
        """JSON with C{q=0} is not acceptable."""
        answer = await self.client.get("/things", headers={"Accept": "application/json;q=0"})
        assertError(self, answer, 406, "not_acceptable")

    async def test_unsupported_media_type(self):
        """A body that is not JSON is a 415 and runs nothing."""
        answer = await self.client.post(
            "/things", raw=b"name=a", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assertError(self, answer, 415, "unsupported_media_type")
        answer = await self.client.delete(
            "/things/a", raw=b"force", headers={"Content-Type": "text/plain"}
        )
        assertError(self, answer, 415, "unsupported_media_type")
        self.assertEqual(self.calls, [])

    async def test_malformed_json(self):
        """Malformed JSON is a 400."""
        answer = await self.client.post(
            "/things", raw=b'{"name": ', headers={"Content-Type": "application/json"}
        )
        assertError(self, answer, 400, "bad_request", "not valid JSON")

    async def test_unknown_field(self):
        """An unknown field is a 400 that names it."""
        answer = await self.client.post("/things", {"name": "a", "colour": "red"})
        assertError(self, answer, 400, "bad_request", "unknown field 'colour'")

    async def test_missing_field(self):
        """A missing required field is a 400 that names it."""
        answer = await self.client.post("/things", {"size": 3})
        assertError(self, answer, 400, "bad_request", "field 'name' is required")

    async def test_wrong_type(self):
        """A field of the wrong type is a 400 that names it."""
        answer = await self.client.post("/things", {"name": "a", "size": "big"})
        assertError(self, answer, 400, "bad_request", "field 'size'")

    async def test_body_not_an_object(self):
        """A JSON body that is not an object is a 400."""
        answer = await self.client.post("/things", [1, 2])
        assertError(self, answer, 400, "bad_request")

    async def test_invalid_names(self):
        """Names that are unsafe in a shell or a path are a 400, in the body and the URI."""
        for name in ["a b", "a;b", "$(reboot)", "../etc", "-rf", "'q'", '"q"', "", "x" * 65, ".hidden"]:
            answer = await self.client.post("/things", {"name": name})
            assertError(self, answer, 400, "bad_request", "not a valid name")
        for quoted in ["a%20b", "a%3Bb", "%24(x)", "-rf", "%27q%27"]:
            answer = await self.client.get(f"/things/{quoted}")
            assertError(self, answer, 400, "bad_request", "not a valid name")

    async def test_domain_errors(self):
        """Each domain error becomes its status code, with its reason."""
        expected = {
            "missing": (404, "not_found", "does not exist"),
            "busy": (409, "conflict", "power it off first"),
            "bad": (400, "bad_request", "cannot be that"),
            "away": (503, "unavailable", "'h1' does not answer"),
            "broken": (502, "bad_gateway", "no such pool"),
        }
        for name, (code, word, part) in expected.items():
            assertError(self, await self.client.get(f"/things/{name}"), code, word, part)

    async def test_internal_error(self):
        """An unexpected exception is a generic 500, logged, with nothing of the inside."""
        answer = await self.client.get("/things/bug")
        assertError(self, answer, 500, "internal_error")
        self.assertNotIn(b"secret", answer.body)
        self.assertNotIn(b"Traceback", answer.body)
        self.assertEqual(len(self.flushLoggedErrors(_Boom)), 1)

    async def test_non_utf8_uri(self):
        """A URI that is not UTF-8 is a JSON 400."""
        answer = await self.client.get("/things/%ff")
        assertError(self, answer, 400, "bad_request")


class SuccessRulesTests(TestCase):
    """Successful answers: JSON, C{Location}, 204, actions."""

    def setUp(self):
        self.calls = []
        self.client = APIClient(CometAPI(self.calls, _table(), fixed_guard()))

    async def test_created(self):
        """A create answers 201 with C{Location} and the resource."""
        answer = await self.client.post("/things", {"name": "a", "size": 2})
        self.assertEqual(answer.code, 201)
        self.assertEqual(answer.header("location"), "/things/a")
        self.assertEqual(answer.json, {"name": "a", "size": 2, "href": "/things/a"})
        self.assertEqual(answer.header("content-type"), "application/json; charset=utf-8")

    async def test_delete_with_and_without_body(self):
        """DELETE answers 204 with no body; its JSON body is optional."""
        answer = await self.client.delete("/things/a")
        self.assertEqual((answer.code, answer.body), (204, b""))
        answer = await self.client.delete("/things/b", {"force": True})
        self.assertEqual(answer.code, 204)
        self.assertEqual(self.calls, [("delete", "a", {}), ("delete", "b", {"force": True})])

    async def test_actions_built_from_table(self):
        """C{actions} map each action to its URI from the route table."""
        answer = await self.client.get("/things/a")
        self.assertEqual(answer.json["actions"], {"poke": "/things/a/poke"})
        answer = await self.client.post(answer.json["actions"]["poke"], {})
        self.assertEqual(answer.json, {"name": "a", "poked": True})

    async def test_action_without_body(self):
        """An action with no body at all means no parameters."""
        answer = await self.client.post("/things/a/poke")
        self.assertEqual(answer.code, 200)

    async def test_head(self):
        """HEAD is answered like GET, without a body."""
        answer = await self.client.request("HEAD", "/things")
        self.assertEqual((answer.code, answer.body), (200, b""))


class DescribeTests(TestCase):
    """Schema errors are described by the field they are about."""

    def test_nested_field(self):
        from jsonschema import Draft202012Validator

        schema = obj(disk=obj(("pool",), pool=NAME))
        error = next(Draft202012Validator(schema).iter_errors({"disk": {"pool": 3}}))
        self.assertIn("field 'disk.pool'", describe(error))


class RouteTableTests(TestCase):
    """The route table refuses inconsistent entries."""

    def test_unknown_path(self):
        table = RouteTable()
        self.assertRaises(ValueError, table.route("GET", "nothing"), lambda *a: None)

    def test_twice(self):
        table = RouteTable()
        table.path("p", "/p")
        table.route("GET", "p")(lambda *a: None)
        self.assertRaises(ValueError, table.route("GET", "p"), lambda *a: None)

    def test_href_quotes(self):
        table = RouteTable()
        table.path("p", "/p/<name>/<int:id>")
        self.assertEqual(table.href("p", name="a b", id=3), "/p/a%20b/3")
        self.assertEqual(table.params("p"), ["name", "id"])


class RealAPITests(TestCase):
    """The real API answers an unknown URI the same way."""

    async def test_unknown(self):
        client = make_client(self)
        assertError(self, await client.get("/cluster/lab/nothing/here"), 404, "not_found")
