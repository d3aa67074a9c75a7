"""The OpenAPI document is generated from the route table and is valid OpenAPI 3."""

from twisted.trial.unittest import TestCase

from comet.web import ROUTES
from comet.web.openapi import document
from tests._api import make_client


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
