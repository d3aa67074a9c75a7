"""
The contract's rules for every endpoint, through the in-memory request path:
each error status with its JSON body, media types, body validation and names.
"""

import io
import json
import re
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from comet.errors import CommandFailed, Conflict, InvalidInput, NotFound, Unavailable
from comet.web import CometAPI
from comet.web._schemas import NAME, obj
from comet.names import NAME_PATTERN, check_name
from comet.web import api_routes
from comet.web._errors import HTTPError
from comet.web._serve import _accepts, _depth, _read_body, describe, ecma_pattern, validate
from comet.web._table import JSON, Endpoint, Response, RouteTable
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

    async def test_bodiless_change_needs_json_type(self):
        """
        A POST or DELETE without a body still needs C{Content-Type:
        application/json}: what another site's form or plain fetch sends (no
        type, text/plain, form encoding) is a 415, and runs nothing.
        """
        for content_type in [None, "text/plain", "application/x-www-form-urlencoded",
                             "multipart/form-data; boundary=x"]:
            for method, path in [("POST", "/things/a/poke"), ("DELETE", "/things/a")]:
                answer = await self.client.request(
                    method, path, headers={"Content-Type": content_type}
                )
                assertError(self, answer, 415, "unsupported_media_type",
                            f"a {method} needs Content-Type: application/json (an empty body included)")
        self.assertEqual(self.calls, [])

    async def test_cross_site_refused(self):
        """
        A change request that a browser sent for another origin's page (its
        C{Sec-Fetch-Site}, or an C{Origin} that is not the C{Host}) is a 403
        and runs nothing, even with the JSON type; GET is not concerned.
        """
        json_type = {"Content-Type": "application/json"}
        refused = [
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},   # another port of the same host
            {"Origin": "http://evil.example"},
            {"Origin": "http://comet.test:8081"},
            {"Origin": "null"},
            {"Origin": "http://comet.test", "Sec-Fetch-Site": "cross-site"},
        ]
        for headers in refused:
            for method, path in [("POST", "/things/a/poke"), ("DELETE", "/things/a"),
                                 ("POST", "/things")]:
                answer = await self.client.request(
                    method, path, raw=b'{"name": "x"}' if path == "/things" else None,
                    headers=dict(json_type, **headers),
                )
                assertError(self, answer, 403, "forbidden", "is refused")
        self.assertEqual(self.calls, [])
        for headers in [{}, {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"},
                        {"Origin": "http://comet.test", "Sec-Fetch-Site": "same-origin"},
                        {"Origin": "http://comet.test:80"}]:
            answer = await self.client.delete("/things/a", headers=headers)
            self.assertEqual(answer.code, 204, (headers, answer.body))
        answer = await self.client.get("/things", headers={"Sec-Fetch-Site": "cross-site",
                                                            "Origin": "http://evil.example"})
        self.assertEqual(answer.code, 200)

    async def test_security_headers(self):
        """Every answer, success or error, forbids sniffing and framing."""
        answers = [await self.client.get("/things"), await self.client.get("/nowhere"),
                   await self.client.get("/things/bug"),
                   await self.client.post("/things/a/poke", headers={"Content-Type": None})]
        self.flushLoggedErrors(_Boom)
        for answer in answers:
            self.assertEqual(answer.header("x-content-type-options"), "nosniff")
            self.assertEqual(answer.header("content-security-policy"), "frame-ancestors 'none'")

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

    async def test_trailing_newline_name(self):
        """
        A name with a final line break is a 400 in the body as in the URI:
        the schema's C{$} is ECMA-262's (end of input), not Python's (which
        also matches before a final newline, so the body passed the schema).
        """
        for name in ["lab\n", "a\n", "x" * 64 + "\n"]:
            answer = await self.client.post("/things", {"name": name})
            assertError(self, answer, 400, "bad_request", "not a valid name")
        assertError(self, await self.client.get("/things/lab%0A"), 400, "bad_request", "not a valid name")
        self.assertEqual((await self.client.post("/things", {"name": "lab"})).code, 201)

    async def test_body_json_python_reads_but_json_has_not(self):
        """
        What Python's json reads but no JSON client means is a 400, not a
        500 (found while fuzzing): an escaped lone surrogate (nothing can
        store it), NaN and Infinity (a NaN passes every minimum and maximum),
        and nesting so deep that the decoder runs out of stack.
        """
        bodies = {
            b'{"name": "a", "size": 1, "x": "\\ud800"}': "lone surrogate",
            b'{"name": "a", "size": NaN}': "NaN is not a JSON number",
            b'{"name": "a", "size": -Infinity}': "-Infinity is not a JSON number",
            b"[" * 100000 + b"]" * 100000: "nests deeper than 32 levels",
            b'{"name": ' + b"[" * 5000 + b"]" * 5000 + b"}": "nests deeper than 32 levels",
            b'{"name": ' + b"[" * 32 + b"]" * 32 + b"}": "nests deeper than 32 levels",
        }
        for raw, reason in bodies.items():
            answer = await self.client.post("/things", raw=raw, headers={"Content-Type": "application/json"})
            assertError(self, answer, 400, "bad_request", reason)
        answer = await self.client.post(
            "/things", raw=b'{"name": "a", "x": "\\ud83d\\ude00"}', headers={"Content-Type": "application/json"}
        )
        assertError(self, answer, 400, "bad_request", "unknown field 'x'")

    async def test_unknown_field_with_line_break(self):
        """An unknown field's name is quoted as Python quotes it: one line (found by Hypothesis)."""
        answer = await self.client.post("/things", {"name": "a", "x\ny": 1, "q'": 2})
        assertError(self, answer, 400, "bad_request", "unknown field \"q'\", 'x\\ny'")

    def test_depth_limit(self):
        """Exactly 32 levels are read (then validated); 33 are refused before validation."""
        endpoint = Endpoint("POST", "things", lambda *a: None, obj())
        deep = b"[" * 31 + b"{}" + b"]" * 31
        self.assertEqual(_depth(_read_body(_Request(deep, b"application/json"), endpoint)), 32)
        e = self.assertRaises(
            HTTPError, _read_body, _Request(b"[" + deep + b"]", b"application/json"), endpoint
        )
        self.assertEqual(e.code, 400)

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


class CancelTests(TestCase):
    """A request whose client went away."""

    def test_cancelled_is_not_an_error(self):
        """
        Klein cancels the view when the connection is lost: serve lets the
        cancellation through (Klein drops it) instead of logging a 500 and
        answering a closed request.
        """
        from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
        from twisted.web.test.requesthelper import DummyRequest

        from comet.web._serve import serve

        gate = Deferred()

        async def handler(api, request, body):
            await gate

        d = ensureDeferred(serve(None, Endpoint("GET", "things", handler), DummyRequest([b"things"]), {}))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.flushLoggedErrors(), [])


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

    def test_href_many_names(self):
        """
        Segments are quoted alike however many different names an answer
        holds (more than any cache of quoted names: a list of 10,000 VMs).
        """
        table = RouteTable()
        table.path("p", "/p/<name>")
        names = [f"vm-{i:05d}" for i in range(10_000)] + ["a b", "ü/x", "a.b_c~d-e", "a%2F"]
        self.assertEqual(
            [table.href("p", name=n) for n in names],
            [f"/p/{quote(n, safe='')}" for n in names],
        )
        self.assertEqual(table.href("p", name="ü/x"), "/p/%C3%BC%2Fx")

    def test_hrefs(self):
        """C{hrefs} gives what C{href} gives for each value, quoted or not."""
        table = RouteTable()
        table.path("p", "/c/<cluster>/v/<name>/x")
        for names in ([f"vm-{i}" for i in range(50)], ["a", "b c", "d/e"], []):
            for cluster in ("lab", "l a\x00b"):
                self.assertEqual(
                    table.hrefs("p", "name", names, cluster=cluster),
                    [table.href("p", cluster=cluster, name=n) for n in names],
                )
        self.assertEqual(table.hrefs("p", "name", ["b c"], cluster="l/a"), ["/c/l%2Fa/v/b%20c/x"])


class RealAPITests(TestCase):
    """The real API answers an unknown URI the same way."""

    async def test_unknown(self):
        client = make_client(self)
        assertError(self, await client.get("/cluster/lab/nothing/here"), 404, "not_found")

    async def test_whole_numbers_written_with_a_fraction(self):
        """
        JSON Schema counts C{1.0} as an integer, so the document allows it
        where an integer is asked: the models get the integer (schemathesis:
        C{"capacity": 25740.0} was a 400 from the model).  A true fraction
        stays a 400.
        """
        from tests.web.test_storage import storage_models

        models = storage_models(self)
        client = make_client(self, models)
        answer = await client.post("/storagepools/pool1/storagevolumes",
                                   {"name": "v", "capacity": 1.0})
        self.assertEqual(answer.code, 202, answer.body)
        await models.tasks.wait(answer.json["id"])
        volume = (await client.get("/storagepools/pool1/storagevolumes/v")).json
        self.assertEqual(volume["capacity"], 1024**3)
        answer = await client.post("/storagepools/pool1/storagevolumes",
                                   {"name": "w", "capacity": 1.5})
        assertError(self, answer, 400, "bad_request", "capacity")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
#: Valid names with something appended or prepended: where the edge cases are.
_NEAR_NAMES = st.builds(
    lambda name, extra, front: extra + name if front else name + extra,
    st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z"),
    st.sampled_from(["", "\n", "\r", " ", "/", "\x00", "-", ".", "x", "\u0660", "\u00e9"]),
    st.booleans(),
)
#: Any value Python's json writes, including what JSON has not.
_WILD_JSON = st.recursive(
    st.none()
    | st.floats()
    | st.text(max_size=5)
    | st.builds(str.__add__, st.text(max_size=3), st.characters(categories=["Cs"])),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=40,
)
_SCHEMAS = [e.schema for e in api_routes().endpoints if e.schema is not None]


@st.composite
def _bodies(draw):
    """A schema of the real API and a body for it: its own fields with any values, or anything."""
    schema = draw(st.sampled_from(_SCHEMAS))
    fields = sorted(schema.get("properties", {}))
    if fields and draw(st.booleans()):
        body = draw(st.dictionaries(st.sampled_from(fields), _JSON, max_size=len(fields)))
    else:
        body = draw(_JSON)
    return schema, body


class _Request:
    """Just what L{_read_body} reads of a request."""

    def __init__(self, raw: bytes, content_type: bytes | None):
        self.content = io.BytesIO(raw)
        self._type = content_type
        self.method = b"POST"

    def getHeader(self, name):
        return self._type if name.lower() == b"content-type" else None


class PropertyTests(TestCase):
    """Hypothesis: the request rules hold for any input."""

    @given(_bodies())
    def test_any_body(self, case):
        """Any JSON body against any endpoint's schema: accepted, or one 400 that is one line."""
        schema, body = case
        try:
            validate(schema, body)
        except HTTPError as e:
            self.assertEqual(e.code, 400)
            self.assertTrue(e.reason)
            self.assertNotIn("\n", e.reason)

    @given(st.one_of(st.text(max_size=70), _NEAR_NAMES))
    def test_schema_name_is_the_name_rule(self, text):
        """The body's name schema accepts exactly what C{check_name} accepts (the URI's rule)."""
        try:
            validate(NAME, text)
            accepted = True
        except HTTPError:
            accepted = False
        self.assertEqual(accepted, check_name(text), repr(text))

    @given(st.text(max_size=10), st.sampled_from(["\n", "\r\n", "\n\n"]))
    def test_ecma_dollar(self, text, end):
        """An ECMA-262 C{$} matches at the end of the input only, never before a line break."""
        self.assertIsNone(ecma_pattern("^[^\n]*$").search(text.replace("\n", "") + end))
        self.assertIsNotNone(ecma_pattern("^[^\n]*$").search(text.replace("\n", "")))
        self.assertEqual(ecma_pattern(NAME_PATTERN).search(text) is not None, check_name(text))

    @given(st.binary(max_size=200), st.sampled_from([None, b"application/json", b"text/plain", b"APPLICATION/JSON; charset=x"]))
    def test_any_raw_body(self, raw, content_type):
        """Any bytes with any type: a JSON value, or a 400 or 415, never another exception."""
        endpoint = Endpoint("POST", "things", lambda *a: None, obj())
        try:
            body = _read_body(_Request(raw, content_type), endpoint)
        except HTTPError as e:
            self.assertIn(e.code, (400, 415))
            return
        self.assertIsNotNone(content_type)
        self.assertEqual(content_type.split(b";")[0].lower(), b"application/json")
        if raw.strip():
            self.assertEqual(body, json.loads(raw.decode("utf-8")))
        else:
            self.assertEqual(body, {})

    @given(_WILD_JSON)
    def test_any_json_text(self, value):
        """
        Whatever Python's json can write (lone surrogates, NaN, Infinity,
        deep nesting) is read as a body that can be stored and answered, or
        is a 400.
        """
        endpoint = Endpoint("POST", "things", lambda *a: None, obj())
        raw = json.dumps(value).encode("ascii")
        try:
            body = _read_body(_Request(raw, b"application/json"), endpoint)
        except HTTPError as e:
            self.assertEqual(e.code, 400)
            return
        json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
        self.assertLessEqual(_depth(body), 32)

    @given(st.text(max_size=60))
    def test_accept_any_header(self, junk):
        """Any C{Accept} value is read without error; one that lists JSON itself admits JSON."""
        self.assertIsInstance(_accepts(junk, JSON), bool)
        self.assertTrue(_accepts(junk + ", application/json", JSON))
        if not re.search(r"[*a-z]", junk.lower()):
            self.assertFalse(_accepts(junk, JSON))
