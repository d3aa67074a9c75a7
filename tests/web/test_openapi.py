"""The OpenAPI document is generated from the route table and is valid OpenAPI 3."""

from twisted.trial.unittest import TestCase

from comet.web import api_routes
from comet.web._table import JSON
from comet.web.openapi import document
from tests._api import APIClient, make_client, make_models
from tests._conformance import ConformanceError, schema_of

#: The API's route table, as each app builds its own.
ROUTES = api_routes()


class OpenAPITests(TestCase):
    def test_every_endpoint(self):
        """Every endpoint of the route table is in the document."""
        doc = document(ROUTES)
        operations = {
            (method.upper(), path)
            for path, item in doc["paths"].items()
            for method in item
            if method != "parameters"
        }
        self.assertEqual(len(operations), len(ROUTES.endpoints))
        self.assertIn(("POST", "/cluster/{cluster}/vms/{name}/start"), operations)
        self.assertIn(("GET", "/tasks/{id}"), operations)

    def test_valid(self):
        try:
            from openapi_spec_validator import validate
        except ImportError:
            self.skipTest("openapi-spec-validator is not installed")
        validate(document(ROUTES))

    async def test_served(self):
        answer = await make_client(self).get("/openapi.json")
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.json["openapi"], "3.1.0")

    async def test_response_schemas_match_answers(self):
        """
        The error, Task and resource schemas of the document accept what
        the API really answers (schemathesis checks every answer with them).
        """
        doc = document(ROUTES)
        models = make_models(self)
        client = make_client(self, models)
        error = (await client.get("/cluster/nothing")).json
        cluster = (await client.post("/cluster", {"name": "lab"})).json
        clusters = (await client.get("/cluster")).json
        responses = doc["paths"]["/cluster"]["post"]["responses"]
        schema_of(doc, responses["409"]).validate(error)
        schema_of(doc, responses["201"]).validate(cluster)
        listing = doc["paths"]["/cluster"]["get"]["responses"]["200"]
        schema_of(doc, listing).validate(clusters)
        await client.post("/templates", {"name": "small", "memory": 128, "cpus": 1})
        await client.post("/cluster/lab/vms", {"template": "small"})
        task = (await client.post("/cluster/lab/start")).json
        task_schema = doc["paths"]["/cluster/{name}/start"]["post"]["responses"]["202"]
        schema_of(doc, task_schema).validate(task)
        await models.tasks.wait(task["id"])
        self.assertFalse(
            schema_of(doc, responses["409"]).is_valid({"code": 200, "error": "fine", "reason": ""})
        )

    def test_query_and_id_parameters(self):
        """Query parameters the handlers read are documented; ids are SQLite integers."""
        doc = document(ROUTES)
        status, limit, offset = doc["paths"]["/tasks"]["get"]["parameters"]
        self.assertEqual((status["name"], status["in"]), ("status", "query"))
        self.assertEqual((limit["name"], limit["schema"]["minimum"], limit["schema"]["maximum"]),
                         ("limit", 1, 1000))
        self.assertEqual((offset["name"], offset["schema"]["minimum"]), ("offset", 0))
        (kind,) = doc["paths"]["/cluster/{cluster}/vms/{name}/console"]["get"]["parameters"]
        self.assertEqual(kind["schema"]["enum"], ["vnc", "serial"])
        (id,) = doc["paths"]["/tasks/{id}"]["parameters"]
        self.assertEqual(id["schema"], {"type": "integer", "minimum": 0, "maximum": 2**63 - 1})

    async def test_body_required(self):
        """
        Every POST, PUT and DELETE needs C{Content-Type: application/json},
        an empty body included (a cross-site form sends none), so the document
        calls every request body required: a PUT without one is a 415 (it was
        accepted, and the document said the body was optional), and an empty
        body with the JSON type is C{{}}.
        """
        doc = document(ROUTES)
        self.assertTrue(doc["paths"]["/cluster/{name}"]["put"]["requestBody"]["required"])
        self.assertTrue(doc["paths"]["/cluster"]["post"]["requestBody"]["required"])
        self.assertTrue(doc["paths"]["/cluster/{name}"]["delete"]["requestBody"]["required"])
        client = make_client(self)
        await client.post("/cluster", {"name": "lab"})
        answer = await client.request("PUT", "/cluster/lab", headers={"Content-Type": None})
        self.assertEqual(answer.code, 415)
        answer = await client.request("PUT", "/cluster/lab")
        self.assertEqual((answer.code, answer.json["name"]), (200, "lab"))

    def test_href_optional(self):
        """
        Objects need no C{href}: a server's zpools and /health have no URI of
        their own (schemathesis: the document said every one had one).
        """
        doc = document(ROUTES)
        zpools = doc["paths"]["/storageservers/{host}/storagezpools"]["get"]["responses"]["200"]
        zpool = {"host": "s1", "zpool": "tank", "size": 1, "allocated": 0, "free": 1,
                 "health": "ONLINE"}
        self.assertTrue(schema_of(doc, zpools).is_valid([zpool]))
        health = doc["paths"]["/health"]["get"]["responses"]["200"]
        self.assertTrue(schema_of(doc, health).is_valid({"status": "ok"}))
        clusters = schema_of(doc, doc["paths"]["/cluster"]["get"]["responses"]["200"])
        summary = {"name": "lab", "state": "empty", "vms": 0, "href": "/cluster/lab"}
        self.assertTrue(clusters.is_valid([summary]))
        self.assertFalse(clusters.is_valid([{**summary, "href": 3}]))
        self.assertFalse(clusters.is_valid("lab"))

    def test_every_operation_declares_its_answers(self):
        """No operation of the API is left at "some object": each says what it answers."""
        undeclared = [(e.method, e.path) for e in ROUTES.endpoints if e.answers is None]
        self.assertEqual(undeclared, [])
        for path, item in document(ROUTES)["paths"].items():
            for method, operation in item.items():
                if method != "parameters":
                    self.assertNotIn("default", operation["responses"], (method, path))

    def test_real_statuses(self):
        """
        The statuses each operation really answers: the console 303, a
        create 201, an action 200 or 202, a DELETE 204; and the errors it
        can answer, with the error body.
        """
        paths = document(ROUTES)["paths"]

        def statuses(path, method):
            return sorted(int(code) for code in paths[path][method]["responses"])

        console = paths["/cluster/{cluster}/vms/{name}/console"]["get"]["responses"]
        self.assertIn("303", console)
        self.assertNotIn("200", console)
        self.assertTrue(console["303"]["headers"]["Location"]["required"])
        self.assertNotIn("content", console["303"])
        self.assertEqual(statuses("/cluster", "post"),
                         [201, 400, 401, 403, 406, 409, 413, 415, 429, 500, 503])
        self.assertEqual(statuses("/cluster", "get"), [200, 400, 401, 403, 406, 413, 429, 500, 503])
        # 503: the daemon cannot serve (the health body, comet.web.health).
        self.assertEqual(statuses("/health", "get"), [200, 400, 403, 406, 413, 500, 503])
        self.assertIn(200, statuses("/cluster/{cluster}/vms/{name}/start", "post"))
        self.assertIn(202, statuses("/cluster/{cluster}/vms/{name}/stop", "post"))
        self.assertNotIn(200, statuses("/cluster/{cluster}/vms/{name}/stop", "post"))
        self.assertIn(204, statuses("/templates/{name}", "delete"))
        self.assertIn(503, statuses("/cluster/{cluster}/vms/{name}/start", "post"))
        error = paths["/cluster"]["post"]["responses"]["409"]["content"][JSON]["schema"]
        self.assertEqual(error, {"$ref": "#/components/schemas/Error"})

    def test_auditlog_parameters(self):
        doc = document(ROUTES)
        params = {p["name"]: p["schema"] for p in doc["paths"]["/auditlog"]["get"]["parameters"]}
        self.assertEqual(sorted(params), ["limit", "offset", "since", "user"])
        self.assertEqual((params["limit"]["minimum"], params["limit"]["maximum"]), (1, 1000))

    async def test_cpus_bound_is_the_largest_host(self):
        """
        The models refuse more CPUs than the largest host has (400): the
        document served says so (schemathesis: C{cpus: 4095} on POST
        /templates was valid by the document, and refused).
        """
        client = make_client(self)  # hosts of 4 and 8 CPUs
        doc = (await client.get("/openapi.json")).json
        body = doc["paths"]["/templates"]["post"]["requestBody"]["content"][JSON]["schema"]
        self.assertEqual(body["properties"]["cpus"]["maximum"], 8)
        vm = doc["paths"]["/cluster/{cluster}/vms/{name}"]["put"]["requestBody"]
        self.assertEqual(vm["content"][JSON]["schema"]["properties"]["cpus"]["maximum"], 8)
        answer = await client.post("/templates", {"name": "big", "cpus": 8})
        self.assertEqual(answer.code, 201, answer.body)
        answer = await client.post("/templates", {"name": "bigger", "cpus": 9})
        self.assertEqual(answer.code, 400, answer.body)

    async def test_pool_server_is_a_configured_one(self):
        """A pool on a server the configuration lacks is a 400: the document served lists them."""
        from tests.web.test_storage import storage_models

        client = make_client(self, storage_models(self))
        doc = (await client.get("/openapi.json")).json
        body = doc["paths"]["/storagepools"]["post"]["requestBody"]["content"][JSON]["schema"]
        self.assertEqual(body["properties"]["server"]["enum"], ["s1", "s2"])
        answer = await client.post("/storagepools", {"name": "x", "server": "s9", "dataset": "tank/x"})
        self.assertEqual(answer.code, 400, answer.body)
        # With no storage server configured, a pool is a 404 (schemathesis:
        # it was a 400 for a server the document could not list): no enum.
        client = make_client(self)
        doc = (await client.get("/openapi.json")).json
        body = doc["paths"]["/storagepools"]["post"]["requestBody"]["content"][JSON]["schema"]
        self.assertNotIn("enum", body["properties"]["server"])
        answer = await client.post("/storagepools", {"name": "x", "server": "s9", "dataset": "tank/x"})
        self.assertEqual(answer.code, 404, answer.body)

    def test_url_bound(self):
        """
        A volume's url is one the model can read (schemathesis: an IPv6
        literal Python's parser refuses, control characters that are \\S in
        ECMA-262 but not in Python, were valid by the document and a 400).
        """
        from comet.web._serve import ecma_pattern
        from comet.web.volume_requests import URL

        url = ecma_pattern(URL["pattern"])
        for good in ["http://x/y", "https://u:p@h:65535/a?b#c", "http://10.0.0.1:8000/i.raw", "http://a:/x",
                     "http://[::1]:22/", "http://[::ffff:127.0.0.1]/", "http://my-host.example.com/a"]:
            self.assertIsNotNone(url.search(good), good)
        for bad in ["https://[935bf6068cEbbDB]#", "http://a/\x1d", "http://a:65536/", "http://a]",
                    "ftp://x/y", "http://a/b c", "http://a\uff03b/", "http://ab--c/", "http://a*b/"]:
            self.assertIsNone(url.search(bad), bad)


    async def test_url_names_only_without_download_allow(self):
        """
        Without [storage] download_allow a private address literal is a 400:
        the served document offers host names only (an address literal the
        fuzzer chose, 10.x or [::1], was valid by the document and refused).
        """
        from comet.config import StorageConfig
        from comet.web._serve import ecma_pattern
        from tests.web.test_storage import storage_models

        client = make_client(self, storage_models(self, storage=StorageConfig()))
        doc = (await client.get("/openapi.json")).json
        body = doc["paths"]["/storagepools/{pool}/storagevolumes"]["post"]["requestBody"]
        url = ecma_pattern(body["content"][JSON]["schema"]["properties"]["url"]["pattern"])
        self.assertIsNotNone(url.search("http://images.example.org/a.raw"))
        for literal in ["http://10.0.0.1/a.raw", "http://[::1]/a.raw", "http://127.0.0.1/"]:
            self.assertIsNone(url.search(literal), literal)
            answer = await client.post("/storagepools/pool1/storagevolumes",
                                       {"name": "v", "url": literal})
            self.assertEqual(answer.code, 400, answer.body)


class ConformanceTests(TestCase):
    """The check every test client makes of every answer (L{tests._conformance})."""

    def api(self, handler, answers):
        from comet.web import CometAPI
        from comet.web._table import RouteTable
        from tests._api import fixed_guard

        table = RouteTable()
        table.path("thing", "/thing")
        table.route("GET", "thing", answers=answers, role="viewer")(handler)
        return APIClient(CometAPI(object(), table, fixed_guard()))

    async def test_body_against_schema(self):
        from comet.web._schemas import resource

        schema = resource("Thing", name={"type": "string"})

        async def good(models, request, body):
            return {"name": "a"}

        async def bad(models, request, body):
            return {"name": 3}

        self.assertEqual((await self.api(good, {200: schema}).get("/thing")).code, 200)
        with self.assertRaises(ConformanceError) as e:
            await self.api(bad, {200: schema}).get("/thing")
        self.assertIn("at name: 3 is not of type 'string'", str(e.exception))

    async def test_status_listed(self):
        """A status the document does not list fails, even a well-formed error."""
        from comet.errors import Conflict

        async def conflict(models, request, body):
            raise Conflict("no")

        with self.assertRaises(ConformanceError) as e:
            await self.api(conflict, {200: None}).get("/thing")
        self.assertIn("GET /thing answered 409, which the OpenAPI document does not list",
                      str(e.exception))

    async def test_no_body_where_none(self):
        from comet.web._table import Response

        async def created(models, request, body):
            return Response({"x": 1}, 201, {"Location": "/thing"})

        with self.assertRaises(ConformanceError) as e:
            await self.api(created, {201: None}).get("/thing")
        self.assertIn("with a body, where the document has none", str(e.exception))

    async def test_required_header(self):
        from comet.web._table import Response

        async def created(models, request, body):
            return Response({"x": 1}, 201)

        with self.assertRaises(ConformanceError) as e:
            await self.api(created, {201: {"type": "object"}}).get("/thing")
        self.assertIn("without the Location header", str(e.exception))
