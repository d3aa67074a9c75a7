"""The OpenAPI document is generated from the route table and is valid OpenAPI 3."""

from twisted.trial.unittest import TestCase

from comet.web import ROUTES
from comet.web._table import JSON
from comet.web.openapi import document
from tests._api import make_client, make_models


class OpenAPITests(TestCase):
    def test_every_endpoint(self):
        """Every endpoint of the route table is in the document."""
        doc = document()
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
        validate(document())

    async def test_served(self):
        answer = await make_client(self).get("/openapi.json")
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.json["openapi"], "3.1.0")

    async def test_response_schemas_match_answers(self):
        """
        The error, Task and resource schemas of the document accept what
        the API really answers (schemathesis checks every answer with them).
        """
        from jsonschema import Draft202012Validator

        doc = document()
        models = make_models(self)
        client = make_client(self, models)
        error = (await client.get("/cluster/nothing")).json
        cluster = (await client.post("/cluster", {"name": "lab"})).json
        clusters = (await client.get("/cluster")).json
        responses = doc["paths"]["/cluster"]["post"]["responses"]
        Draft202012Validator(responses["default"]["content"][JSON]["schema"]).validate(error)
        Draft202012Validator(responses["201"]["content"][JSON]["schema"]).validate(cluster)
        listing = doc["paths"]["/cluster"]["get"]["responses"]["200"]["content"][JSON]["schema"]
        Draft202012Validator(listing).validate(clusters)
        await client.post("/templates", {"name": "small", "memory": 128, "cpus": 1})
        await client.post("/cluster/lab/vms", {"template": "small"})
        task = (await client.post("/cluster/lab/start")).json
        task_schema = doc["paths"]["/cluster/{name}/start"]["post"]["responses"]["202"]
        Draft202012Validator(task_schema["content"][JSON]["schema"]).validate(task)
        await models.tasks.wait(task["id"])
        self.assertFalse(
            Draft202012Validator(responses["default"]["content"][JSON]["schema"]).is_valid(
                {"code": 200, "error": "fine", "reason": ""}
            )
        )

    def test_query_and_id_parameters(self):
        """Query parameters the handlers read are documented; ids are SQLite integers."""
        doc = document()
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
        doc = document()
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
        from jsonschema import Draft202012Validator

        ok = document()["paths"]["/storageservers/{host}/storagezpools"]["get"]["responses"]["200"]
        schema = Draft202012Validator(ok["content"][JSON]["schema"])
        self.assertTrue(schema.is_valid([{"host": "s1", "zpool": "tank", "size": 1}]))
        self.assertTrue(schema.is_valid({"name": "lab", "href": "/cluster/lab"}))
        self.assertTrue(schema.is_valid({"status": "ok"}))
        self.assertFalse(schema.is_valid({"name": "lab", "href": 3}))
        self.assertFalse(schema.is_valid("lab"))
