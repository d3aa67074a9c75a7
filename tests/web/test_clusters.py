"""The cluster collection and resource, through the HTTP API."""

from twisted.trial.unittest import TestCase

from tests._api import make_client, make_models, temp_database
from tests.web.test_serve import assertError


class ClusterAPITests(TestCase):
    def setUp(self):
        self.models = make_models(self)
        self.client = make_client(self, self.models)

    async def test_empty(self):
        """A new daemon has no cluster."""
        answer = await self.client.get("/cluster")
        self.assertEqual((answer.code, answer.json), (200, []))

    async def test_create_get_list(self):
        """A created cluster is answered with 201, Location, and then listed."""
        answer = await self.client.post("/cluster", {"name": "lab", "description": "a lab"})
        self.assertEqual(answer.code, 201)
        self.assertEqual(answer.header("location"), "/cluster/lab")
        body = answer.json
        self.assertEqual(body["name"], "lab")
        self.assertEqual(body["description"], "a lab")
        self.assertEqual(body["state"], "empty")
        self.assertEqual(body["vms"], 0)
        self.assertEqual(body["href"], "/cluster/lab")
        self.assertIsInstance(body["created"], int)
        self.assertEqual(body["actions"], {})
        self.assertEqual((await self.client.get("/cluster/lab")).json, body)
        listed = (await self.client.get("/cluster")).json
        self.assertEqual(listed, [{"name": "lab", "state": "empty", "vms": 0, "href": "/cluster/lab"}])

    async def test_name_taken(self):
        """A second cluster of the same name is a 409 and changes nothing."""
        await self.client.post("/cluster", {"name": "lab", "description": "first"})
        answer = await self.client.post("/cluster", {"name": "lab", "description": "second"})
        assertError(self, answer, 409, "conflict", "already exists")
        self.assertEqual((await self.client.get("/cluster/lab")).json["description"], "first")

    async def test_bad_input_changes_nothing(self):
        """Invalid bodies are 400s and create nothing."""
        for body in [{}, {"name": "a b"}, {"name": "x", "state": "running"}, {"name": 3}]:
            assertError(self, await self.client.post("/cluster", body), 400, "bad_request")
        self.assertEqual((await self.client.get("/cluster")).json, [])

    async def test_unknown(self):
        """An unknown cluster is a 404 for GET, PUT and DELETE."""
        assertError(self, await self.client.get("/cluster/none"), 404, "not_found", "'none'")
        assertError(self, await self.client.put("/cluster/none", {"description": "x"}), 404, "not_found")
        assertError(self, await self.client.delete("/cluster/none"), 404, "not_found")

    async def test_update_description(self):
        await self.client.post("/cluster", {"name": "lab"})
        answer = await self.client.put("/cluster/lab", {"description": "new"})
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.json["description"], "new")
        self.assertIsNone(answer.header("location"))

    async def test_rename(self):
        """A rename answers the new Location; the old name is gone."""
        await self.client.post("/cluster", {"name": "lab"})
        answer = await self.client.put("/cluster/lab", {"name": "lab2"})
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.header("location"), "/cluster/lab2")
        self.assertEqual(answer.json["href"], "/cluster/lab2")
        assertError(self, await self.client.get("/cluster/lab"), 404, "not_found")

    async def test_rename_to_taken(self):
        await self.client.post("/cluster", {"name": "a"})
        await self.client.post("/cluster", {"name": "b"})
        assertError(self, await self.client.put("/cluster/a", {"name": "b"}), 409, "conflict")

    async def test_put_read_only_field(self):
        """PUT of a read-only or unknown field is a 400."""
        await self.client.post("/cluster", {"name": "lab"})
        for body in [{"state": "running"}, {"created": 1}, {"vms": 3}]:
            assertError(self, await self.client.put("/cluster/lab", body), 400, "bad_request")

    async def test_delete(self):
        await self.client.post("/cluster", {"name": "lab"})
        answer = await self.client.delete("/cluster/lab")
        self.assertEqual((answer.code, answer.body), (204, b""))
        self.assertEqual((await self.client.get("/cluster")).json, [])

    async def test_delete_with_vms(self):
        """A cluster with VMs is deleted only when forced, which deletes the VMs first."""
        states = {"lab": ("running", "shutoff")}
        deleted = []

        async def vm_states(record):
            return states.get(record.name, ())

        async def on_delete(record):
            deleted.append(record.name)
            states.pop(record.name)

        self.models.clusters.vm_states = vm_states
        self.models.clusters.on_delete = on_delete
        await self.client.post("/cluster", {"name": "lab"})
        shown = (await self.client.get("/cluster/lab")).json
        self.assertEqual((shown["state"], shown["vms"]), ("partial", 2))
        assertError(self, await self.client.delete("/cluster/lab"), 409, "conflict", "2 VM")
        self.assertEqual(deleted, [])
        answer = await self.client.delete("/cluster/lab", {"force": True})
        self.assertEqual(answer.code, 204)
        self.assertEqual(deleted, ["lab"])
