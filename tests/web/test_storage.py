"""
Storage servers, pools and volumes through the HTTP API, against in-memory
storage servers (L{comet.remote.FakeStorageServer}).
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from comet.config import StorageConfig, StoragePoolConfig, StorageServerConfig
from comet.remote import FakeRunner, FakeStorageServer
from comet.remote.zfs import OWNER_PROPERTY
from comet.store import Intents as IntentTable
from tests._api import make_client, make_models
from tests.web.test_serve import assertError

GiB = 1024**3


#: The images these tests download are served on loopback, which downloads
#: may not reach by default.
LOOPBACK_DOWNLOADS = StorageConfig(download_allow=("127.0.0.0/8",))


def storage_models(testcase, **kw):
    """
    Models with two fake storage servers, s1 and s2, and pools pool1 and
    pool2 (downloads from loopback allowed unless C{storage} says otherwise).
    """
    kw.setdefault("storage", LOOPBACK_DOWNLOADS)
    testcase.servers = {
        h: FakeStorageServer(pools={"tank": 100 * GiB}) for h in ("s1", "s2")
    }
    testcase.runners = {h: FakeRunner(s, host=h) for h, s in testcase.servers.items()}
    return make_models(
        testcase,
        runners=testcase.runners,
        storageservers=(StorageServerConfig(host="s1"), StorageServerConfig(host="s2")),
        storagepools=(
            StoragePoolConfig(name="pool1", server="s1", dataset="tank/comet"),
            StoragePoolConfig(name="pool2", server="s2", dataset="tank/comet"),
        ),
        **kw,
    )


class _Image(Resource):
    """Serves C{data} at /image, without a length at /chunked, 404 elsewhere."""

    isLeaf = True

    def __init__(self, data: bytes):
        super().__init__()
        self.data = data

    def render_GET(self, request):
        if request.path == b"/image":
            request.setHeader(b"content-length", str(len(self.data)).encode())
            return self.data
        if request.path == b"/chunked":
            request.write(self.data)
            request.finish()
            from twisted.web.server import NOT_DONE_YET

            return NOT_DONE_YET
        request.setResponseCode(404)
        return b"no such image"


class StorageAPITests(TestCase):
    def setUp(self):
        self.models = storage_models(self)
        self.client = make_client(self, self.models)

    def ran(self):
        return [c for r in self.runners.values() for c in r.ran]

    async def wait(self, answer):
        """Wait for the task of a 202 answer; the task as it ended."""
        self.assertEqual(answer.code, 202, answer.body)
        task_id = answer.json["id"]
        await self.models.tasks.wait(task_id)
        return (await self.client.get(f"/tasks/{task_id}")).json

    async def make_volume(self, name="v1", pool="pool1", capacity=1):
        task = await self.wait(await self.client.post(
            f"/storagepools/{pool}/storagevolumes", {"name": name, "capacity": capacity}))
        self.assertEqual(task["status"], "finished", task)
        return task

    # Servers

    async def test_servers(self):
        """Servers come from the configuration; state is probed; zpools are live."""
        answer = await self.client.get("/storageservers")
        self.assertEqual(answer.json, [
            {"host": "s1", "href": "/storageservers/s1"},
            {"host": "s2", "href": "/storageservers/s2"},
        ])
        server = (await self.client.get("/storageservers/s1")).json
        self.assertEqual(server["state"], "reachable")
        self.assertEqual(server["storagezpools"], "/storageservers/s1/storagezpools")
        zpools = (await self.client.get("/storageservers/s1/storagezpools")).json
        self.assertEqual(len(zpools), 1)
        self.assertEqual((zpools[0]["host"], zpools[0]["zpool"], zpools[0]["size"],
                          zpools[0]["health"]), ("s1", "tank", 100 * GiB, "ONLINE"))
        self.assertEqual(set(zpools[0]), {"host", "zpool", "size", "allocated", "free", "health"})

    async def test_server_unreachable(self):
        """A server that does not answer is unreachable, its zpools 503; others work."""
        self.runners["s1"].unavailable = "timed out"
        self.assertEqual((await self.client.get("/storageservers/s1")).json["state"],
                         "unreachable")
        assertError(self, await self.client.get("/storageservers/s1/storagezpools"),
                    503, "unavailable", "s1")
        assertError(self, await self.client.get("/storagepools/pool1"), 503, "unavailable")
        self.assertEqual((await self.client.get("/storagepools/pool2")).code, 200)

    async def test_unknown_server(self):
        assertError(self, await self.client.get("/storageservers/nope"), 404, "not_found")
        assertError(self, await self.client.get("/storageservers/nope/storagezpools"),
                    404, "not_found")

    # Pools

    async def test_configured_pools(self):
        """Configured pools are listed and read live."""
        listed = (await self.client.get("/storagepools")).json
        self.assertEqual([p["name"] for p in listed], ["pool1", "pool2"])
        pool = (await self.client.get("/storagepools/pool1")).json
        self.assertEqual(pool["state"], "active")
        self.assertEqual((pool["path"], pool["server"], pool["zpool"]),
                         ("tank/comet", "s1", "tank"))
        self.assertEqual(pool["capacity"], pool["allocated"] + pool["available"])
        self.assertGreater(pool["available"], 90 * GiB)
        self.assertEqual(pool["volumes"], "/storagepools/pool1/storagevolumes")
        self.assertEqual(pool["actions"], {"deactivate": "/storagepools/pool1/deactivate"})
        assertError(self, await self.client.get("/storagepools/nope"), 404, "not_found")
        assertError(self, await self.client.delete("/storagepools/pool1"), 409, "conflict",
                    "configuration")

    async def test_activate_deactivate(self):
        """Deactivation is stored; an inactive pool accepts no volume; 409 when repeated."""
        answer = await self.client.post("/storagepools/pool1/deactivate")
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.json["state"], "inactive")
        self.assertEqual(answer.json["actions"], {"activate": "/storagepools/pool1/activate"})
        assertError(self, await self.client.post("/storagepools/pool1/deactivate"), 409,
                    "conflict", "inactive")
        assertError(self, await self.client.post(
            "/storagepools/pool1/storagevolumes", {"name": "v", "capacity": 1}),
            409, "conflict", "inactive")
        self.assertEqual((await self.client.get("/storagepools")).json[0]["state"], "inactive")
        answer = await self.client.post("/storagepools/pool1/activate")
        self.assertEqual(answer.json["state"], "active")

    async def test_register_pool(self):
        """POST creates the dataset (tagged) if absent; DELETE removes it again."""
        answer = await self.client.post(
            "/storagepools", {"name": "extra", "server": "s2", "dataset": "tank/extra"})
        self.assertEqual(answer.code, 201, answer.body)
        self.assertEqual(answer.header("location"), "/storagepools/extra")
        self.assertEqual(answer.json["path"], "tank/extra")
        ds = self.servers["s2"].datasets["tank/extra"]
        self.assertEqual(ds.props.get(OWNER_PROPERTY), "comet")
        assertError(self, await self.client.post(
            "/storagepools", {"name": "extra", "server": "s2", "dataset": "tank/x"}),
            409, "conflict")
        assertError(self, await self.client.post(
            "/storagepools", {"name": "again", "server": "s2", "dataset": "tank/extra"}),
            409, "conflict")
        assertError(self, await self.client.post(
            "/storagepools", {"name": "x", "server": "s9", "dataset": "tank/x"}),
            400, "bad_request", "s9")
        await self.make_volume("v", pool="extra")
        assertError(self, await self.client.delete("/storagepools/extra"), 409, "conflict",
                    "volume")
        self.assertEqual((await self.client.delete("/storagepools/extra/storagevolumes/v")).code,
                         204)
        self.assertEqual((await self.client.delete("/storagepools/extra")).code, 204)
        self.assertNotIn("tank/extra", self.servers["s2"].datasets)
        assertError(self, await self.client.get("/storagepools/extra"), 404, "not_found")

    async def test_register_existing_dataset(self):
        """A pool on an existing dataset leaves the dataset when deleted."""
        answer = await self.client.post(
            "/storagepools", {"name": "same", "server": "s1", "dataset": "tank"})
        self.assertEqual(answer.code, 201, answer.body)
        self.assertEqual((await self.client.delete("/storagepools/same")).code, 204)
        self.assertIn("tank", self.servers["s1"].datasets)

    # Volumes

    async def test_volume_lifecycle(self):
        """Create (a task), read live, list, delete."""
        task = await self.make_volume("v1")
        self.assertEqual(task["target_uri"], "/storagepools/pool1/storagevolumes/v1")
        ds = self.servers["s1"].datasets["tank/comet/v1"]
        self.assertEqual(ds.volsize, GiB)
        self.assertEqual(ds.props.get(OWNER_PROPERTY), "comet")
        volume = (await self.client.get("/storagepools/pool1/storagevolumes/v1")).json
        self.assertEqual(volume["name"], "v1")
        self.assertEqual(volume["state"], "unmapped")
        self.assertEqual((volume["host"], volume["zpool"], volume["target"], volume["vm"]),
                         ("s1", "tank", None, None))
        self.assertEqual(volume["capacity"], GiB)
        self.assertIsInstance(volume["used"], int)
        self.assertEqual(volume["href"], "/storagepools/pool1/storagevolumes/v1")
        listed = (await self.client.get("/storagepools/pool1/storagevolumes")).json
        self.assertEqual([v["name"] for v in listed], ["v1"])
        self.assertEqual((await self.client.get("/storagepools/pool2/storagevolumes")).json, [])
        assertError(self, await self.client.post(
            "/storagepools/pool1/storagevolumes", {"name": "v1", "capacity": 1}),
            409, "conflict", "already exists")
        answer = await self.client.delete("/storagepools/pool1/storagevolumes/v1")
        self.assertEqual(answer.code, 204)
        self.assertNotIn("tank/comet/v1", self.servers["s1"].datasets)
        assertError(self, await self.client.get("/storagepools/pool1/storagevolumes/v1"),
                    404, "not_found")
        assertError(self, await self.client.delete("/storagepools/pool1/storagevolumes/v1"),
                    404, "not_found")

    async def test_volume_sparse(self):
        """Volumes are thin: one larger than the pool's free space can be made."""
        await self.make_volume("big", capacity=500)
        self.assertEqual(self.servers["s1"].datasets["tank/comet/big"].volsize, 500 * GiB)
        create = [c for c in self.runners["s1"].ran if c[:2] == ["zfs", "create"]]
        self.assertIn("-s", create[0])

    async def test_volume_create_fails(self):
        """A zfs create that fails fails the task and leaves nothing."""
        from comet.remote._fakeserver import _Error

        def full(args):
            raise _Error("cannot create 'tank/comet/big': out of space")

        self.servers["s1"]._zfs_create = full
        task = await self.wait(await self.client.post(
            "/storagepools/pool1/storagevolumes", {"name": "big", "capacity": 1}))
        self.assertEqual(task["status"], "failed")
        self.assertIn("out of space", task["message"])
        self.assertNotIn("tank/comet/big", self.servers["s1"].datasets)
        self.assertEqual((await self.client.get("/storagepools/pool1/storagevolumes")).json, [])
        self.assertEqual(await self.models.locks.rows(), [])

    async def test_busy_volume(self):
        """
        While a volume is being created, a second create or a delete of it is a
        409 naming the task; its lock row goes when the task ends.
        """
        from twisted.internet.defer import Deferred

        gate = Deferred()
        runner = self.runners["s1"]
        run = runner.run

        def held(argv, *args, **kw):
            if list(argv[:2]) == ["zfs", "create"]:
                return gate.addCallback(lambda _: run(argv, *args, **kw))
            return run(argv, *args, **kw)

        self.patch(runner, "run", held)
        answer = await self.client.post("/storagepools/pool1/storagevolumes",
                                        {"name": "v1", "capacity": 1})
        self.assertEqual(answer.code, 202, answer.body)
        busy = (f"volume 'v1' in storage pool 'pool1' is busy: it is being created"
                f" (task /tasks/{answer.json['id']})")
        assertError(self, await self.client.post(
            "/storagepools/pool1/storagevolumes", {"name": "v1", "capacity": 1}),
            409, "conflict", busy)
        assertError(self, await self.client.delete("/storagepools/pool1/storagevolumes/v1"),
                    409, "conflict", busy)
        rows = await self.models.locks.rows()
        self.assertEqual([(r.object, r.task_id) for r in rows], [("pool1/v1", answer.json["id"])])
        gate.callback(None)
        self.assertEqual((await self.wait(answer))["status"], "finished")
        self.assertEqual(await self.models.locks.rows(), [])
        self.assertEqual((await self.client.delete("/storagepools/pool1/storagevolumes/v1")).code,
                         204)
        self.assertEqual(await self.models.locks.rows(), [])

    async def test_volume_grows(self):
        """
        PUT capacity grows a volume at once (live size, record and an event);
        the same size changes nothing; smaller, foreign or bad bodies are
        refused and change nothing.
        """
        await self.make_volume()
        href = "/storagepools/pool1/storagevolumes/v1"
        answer = await self.client.put(href, {"capacity": 3})
        self.assertEqual(answer.code, 200, answer.body)
        self.assertEqual(answer.json["capacity"], 3 * GiB)
        self.assertEqual((await self.client.get(href)).json["capacity"], 3 * GiB)
        self.assertEqual(self.servers["s1"].datasets["tank/comet/v1"].volsize, 3 * GiB)
        self.assertEqual((await self.models.storage.records.volume("pool1", "v1")).capacity,
                         3 * GiB)
        self.assertEqual((await self.client.put(href, {"capacity": 3})).json["capacity"], 3 * GiB)
        assertError(self, await self.client.put(href, {"capacity": 2}), 409, "conflict",
                    "can only grow")
        for body in ({}, {"capacity": 0}, {"capacity": "4"}, {"capacity": 4, "name": "w"},
                     {"capacity": True}):
            assertError(self, await self.client.put(href, body), 400, "bad_request")
        assertError(self, await self.client.put("/storagepools/pool1/storagevolumes/nope",
                                                {"capacity": 4}), 404, "not_found")
        await self.runners["s1"].run(["zfs", "create", "-V", "1048576", "tank/comet/theirs"])
        assertError(self, await self.client.put("/storagepools/pool1/storagevolumes/theirs",
                                                {"capacity": 4}), 409, "conflict", "not made by")
        self.assertEqual(self.servers["s1"].datasets["tank/comet/theirs"].volsize, 1048576)
        self.assertEqual(self.servers["s1"].datasets["tank/comet/v1"].volsize, 3 * GiB)
        self.assertEqual(await IntentTable(self.models.users.db).list(), [])

    async def test_foreign_volume_not_destroyed(self):
        """A zvol Comet did not create is shown but never destroyed."""
        await self.runners["s1"].run(["zfs", "create", "-V", "1048576", "tank/comet/theirs"])
        listed = (await self.client.get("/storagepools/pool1/storagevolumes")).json
        self.assertEqual([v["name"] for v in listed], ["theirs"])
        assertError(self, await self.client.delete("/storagepools/pool1/storagevolumes/theirs"),
                    409, "conflict", "not created by this Comet")
        self.assertIn("tank/comet/theirs", self.servers["s1"].datasets)

    async def test_bad_volume_bodies(self):
        for body in [{"name": "v"}, {"name": "v", "capacity": 1, "url": "http://x/y"},
                     {"name": "v", "capacity": 0}, {"name": "v", "capacity": "1"},
                     {"name": "v", "url": "ftp://x/y"}, {"name": "v", "url": "file:///etc/passwd"},
                     {"name": "v", "capacity": 1, "extra": 1}]:
            answer = await self.client.post("/storagepools/pool1/storagevolumes", body)
            assertError(self, answer, 400, "bad_request")
        self.assertEqual(self.ran(), [])

    async def test_unparsable_urls(self):
        """
        A URL whose host or port Python cannot read (an unmatched bracket, a
        port that is no number or out of range) is a 400, not a 500 (found
        by schemathesis).
        """
        for url in ["https://x]", "http://[::1/image", "http://a:x/image", "http://a:99999999/i"]:
            answer = await self.client.post(
                "/storagepools/pool1/storagevolumes", {"name": "v", "url": url})
            assertError(self, answer, 400, "bad_request", "url must be an http or https URL")
        self.assertEqual(self.ran(), [])

    async def test_hostile_names(self):
        """Names a shell or a path would read specially: 400, and nothing runs anywhere."""
        hostile = ["a;reboot", "$(reboot)", "a b", "../etc", "'q'", '"q"', "-rf", "`id`",
                   "a|b", "a&b", ".hidden", "a/b", "x" * 65]
        for name in hostile:
            quoted = name.replace("/", "%2F").replace(" ", "%20").replace('"', "%22").replace(
                "`", "%60").replace("|", "%7C")
            for answer in [
                await self.client.post("/storagepools/pool1/storagevolumes",
                                       {"name": name, "capacity": 1}),
                await self.client.post("/storagepools",
                                       {"name": name, "server": "s1", "dataset": "tank/x"}),
                await self.client.post("/storagepools", {
                    "name": "ok", "server": "s1",
                    # tank/a/b is a fine dataset: make it hostile another way.
                    "dataset": f"tank/{name}" if "/" not in name else "tank/../etc"}),
                await self.client.post("/storagepools",
                                       {"name": "ok", "server": name, "dataset": "tank/x"}),
                await self.client.get(f"/storagepools/pool1/storagevolumes/{quoted}"),
                await self.client.delete(f"/storagepools/pool1/storagevolumes/{quoted}"),
                await self.client.get(f"/storagepools/{quoted}"),
                await self.client.post(f"/storagepools/{quoted}/storagevolumes",
                                       {"name": "v", "capacity": 1}),
                await self.client.post("/templates", {"name": "t", "disk": {
                    "pool": "pool1", "volume": name}}),
            ]:
                self.assertIn(answer.code, (400, 404), (name, answer.body))
                if answer.code == 404:
                    # Werkzeug does not route a path with an encoded slash here.
                    continue
                assertError(self, answer, 400, "bad_request")
        self.assertEqual(self.ran(), [])
        self.assertNotIn("ok", [p["name"] for p in (await self.client.get("/storagepools")).json])

    # Downloads

    def serve_image(self, data: bytes) -> str:
        port = reactor.listenTCP(0, Site(_Image(data)), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    async def test_volume_from_url(self):
        """An image is streamed into a zvol sized up to whole GiB, with progress."""
        data = os.urandom(3 * 1024 * 1024 + 17)
        base = self.serve_image(data)
        task = await self.wait(await self.client.post(
            "/storagepools/pool1/storagevolumes", {"name": "img", "url": base + "/image"}))
        self.assertEqual(task["status"], "finished", task)
        self.assertIn(str(len(data)), task["message"])
        ds = self.servers["s1"].datasets["tank/comet/img"]
        self.assertEqual(ds.volsize, GiB)
        self.assertEqual(bytes(ds.data[: len(data)]), data)
        dd = [c for c in self.runners["s1"].calls if c.argv[0] == "dd"]
        self.assertEqual(len(dd), 1)
        self.assertEqual(dd[0].argv[2:], ("bs=1M", "iflag=fullblock", "conv=fsync"))
        volume = (await self.client.get("/storagepools/pool1/storagevolumes/img")).json
        self.assertEqual(volume["capacity"], GiB)

    async def test_url_not_found(self):
        """A URL that answers 404 fails the task and leaves no volume."""
        base = self.serve_image(b"x")
        task = await self.wait(await self.client.post(
            "/storagepools/pool1/storagevolumes", {"name": "img", "url": base + "/missing"}))
        self.assertEqual(task["status"], "failed")
        self.assertIn("404", task["message"])
        self.assertNotIn("tank/comet/img", self.servers["s1"].datasets)
        assertError(self, await self.client.get("/storagepools/pool1/storagevolumes/img"),
                    404, "not_found")

    async def test_url_without_length(self):
        """An image of unknown length fails the task and leaves no volume."""
        base = self.serve_image(b"abc" * 1000)
        task = await self.wait(await self.client.post(
            "/storagepools/pool1/storagevolumes", {"name": "img", "url": base + "/chunked"}))
        self.assertEqual(task["status"], "failed")
        self.assertIn("length", task["message"])
        self.assertNotIn("tank/comet/img", self.servers["s1"].datasets)

    async def test_url_unreachable(self):
        """A URL nobody answers at fails the task and leaves no volume."""
        port = reactor.listenTCP(0, Site(_Image(b"")), interface="127.0.0.1")
        number = port.getHost().port
        await port.stopListening()
        task = await self.wait(await self.client.post(
            "/storagepools/pool1/storagevolumes",
            {"name": "img", "url": f"http://127.0.0.1:{number}/image"}))
        self.assertEqual(task["status"], "failed")
        self.assertNotIn("tank/comet/img", self.servers["s1"].datasets)

    async def test_write_fails(self):
        """dd failing half way destroys the volume again."""
        data = os.urandom(1024 * 1024)
        base = self.serve_image(data)
        self.servers["s1"]._dd = lambda args, stdin: (_ for _ in ()).throw(
            __import__("comet.remote._fakeserver", fromlist=["_Error"])._Error("dd: I/O error"))
        task = await self.wait(await self.client.post(
            "/storagepools/pool1/storagevolumes", {"name": "img", "url": base + "/image"}))
        self.assertEqual(task["status"], "failed")
        self.assertNotIn("tank/comet/img", self.servers["s1"].datasets)

    async def test_url_larger_than_pool(self):
        """An image larger than the pool's free space fails before any zvol is made."""
        self.servers["s1"].pools["tank"] = 2 * 1024 * 1024
        base = self.serve_image(os.urandom(3 * 1024 * 1024))
        task = await self.wait(await self.client.post(
            "/storagepools/pool1/storagevolumes", {"name": "img", "url": base + "/image"}))
        self.assertEqual(task["status"], "failed")
        self.assertIn("larger", task["message"])
        self.assertNotIn("tank/comet/img", self.servers["s1"].datasets)
        self.assertEqual([c for c in self.runners["s1"].ran if c[:2] == ["zfs", "create"]], [])
