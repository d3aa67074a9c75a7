"""
The real C{comet} command (installed in its own virtualenv,
L{tests.client._cli}) against a real daemon on the testbed's storage: a
volume downloaded from a URL with its progress bar to the end, the pools
and servers as the API shows them, and the volume deleted again.
"""

from __future__ import annotations

import json
import os

from twisted.internet import reactor
from twisted.web.server import Site
from twisted.web.static import File

from tests._process import run
from tests._util import temp_dir
from tests.client._cli import client_venv
from tests.integration._daemon import CometDaemonCase


class ClientStorageTests(CometDaemonCase):
    timeout = 600

    async def comet(self, *args: str):
        """Run C{comet ARGS} (exit code, stdout, stderr) with this daemon's URL and token."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "HOME": temp_dir(self, "comet-client-home-"),
               "COMET_URL": self.base_url, "COMET_TOKEN": self.api_token, "COLUMNS": "200"}
        done = await run([os.path.join(client_venv(), "bin", "comet"), *args], env=env, timeout=500)
        return done.code, done.out.decode(), done.err.decode()

    async def test_volume_download_with_progress(self):
        image = self.stack["guest"]["image"]
        site = Site(File(os.path.dirname(image)))
        site.noisy = False
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        url = f"http://127.0.0.1:{listening.getHost().port}/{os.path.basename(image)}"

        code, out, err = await self.comet("pool", "list", "--json")
        self.assertEqual((code, json.loads(out)), (0, await self.get("/storagepools")), err)
        code, out, err = await self.comet("server", "list", "--json")
        self.assertEqual((code, json.loads(out)), (0, await self.get("/storageservers")), err)

        pool = await self.pick_pool(2 * self.stack["guest"]["image_size"] + 128 * 2**20)
        name = f"cli-{self.token}"
        self.addCleanup(self.request, "DELETE", f"/storagepools/{pool}/storagevolumes/{name}", {"force": True})
        code, out, err = await self.comet("volume", "create", f"{pool}/{name}", "--url", url)
        self.assertEqual(code, 0, err)
        task = (await self.get("/tasks?limit=1"))[0]
        self.assertEqual(task["status"], "finished", task)
        self.assertEqual(out.strip(), f"task {task['id']} finished: {task['message']}")
        self.assertRegex(err, rf"task {task['id']} .*100%")

        code, out, err = await self.comet("volume", "show", f"{pool}/{name}", "--json")
        self.assertEqual((code, json.loads(out)),
                         (0, await self.get(f"/storagepools/{pool}/storagevolumes/{name}")), err)
        code, out, err = await self.comet("volume", "list", pool)
        self.assertEqual(code, 0, err)
        self.assertIn(name, out)
        code, out, err = await self.comet("volume", "delete", f"{pool}/{name}")
        self.assertEqual(code, 0, err)
        self.assertEqual((await self.request("GET", f"/storagepools/{pool}/storagevolumes/{name}")).code, 404)
