"""
A gzip-compressed image downloaded into a volume on the testbed's real
storage server, through the HTTP API of a C{twistd -n comet} child: the
server decompresses it on its way into the zvol (the zvol then holds the
raw image), and a SHA-256 that does not match fails the task and removes
the zvol.  A qcow2 image is converted there by qemu-img.
"""

from __future__ import annotations

import hashlib
import os

from twisted.internet import reactor
from twisted.web.server import Site
from twisted.web.static import File

from tests._qcow2 import qcow2_of
from tests._util import temp_dir
from tests.integration import _testbed
from tests.integration._daemon import CometDaemonCase

GiB = 1024**3
MiB = 1024**2


class CompressedDownloadTests(CometDaemonCase):
    timeout = 400

    async def test_gzip_with_sha256(self):
        guest = self.stack["guest"]
        packed = guest["image_gz"]
        with open(packed, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        site = Site(File(os.path.dirname(packed)))
        site.noisy = False
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        url = f"http://127.0.0.1:{listening.getHost().port}/{os.path.basename(packed)}"
        pool = await self.pick_pool(guest["image_size"] + 16 * MiB)
        server = next(s for s in self.stack["servers"] if s["storagepool"] == pool)
        names = [f"it-{self.token}-gz", f"it-{self.token}-bad"]
        self.addCleanup(self._remove, pool, names)

        # A wrong sum: the task fails, saying both, and no zvol is left.
        answer = await self.request("POST", f"/storagepools/{pool}/storagevolumes",
                                    {"name": names[1], "url": url, "capacity": 1,
                                     "sha256": "0" * 64})
        task = await self.wait_task(answer)
        self.assertEqual(task["status"], "failed", task)
        self.assertIn(digest, task["message"])
        listed = await _testbed.ssh(self.stack, server,
                                    f"zfs list -H -o name -t volume -r {server['dataset']}")
        self.assertNotIn(names[1], listed)

        # The right one: the zvol holds the raw image.
        answer = await self.request("POST", f"/storagepools/{pool}/storagevolumes",
                                    {"name": names[0], "url": url, "capacity": 1,
                                     "sha256": digest})
        task = await self.wait_task(answer)
        self.assertEqual(task["status"], "finished", task)
        volume = await self.get(f"/storagepools/{pool}/storagevolumes/{names[0]}")
        self.assertEqual(volume["capacity"], GiB)
        zvol = f"{server['dataset']}/{names[0]}"
        remote = await _testbed.ssh(
            self.stack, server,
            f"head -c {guest['image_size']} $(zvol-dev {zvol}) | sha256sum")
        with open(guest["image"], "rb") as f:
            raw = hashlib.sha256(f.read()).hexdigest()
        self.assertEqual(remote.split()[0], raw)

    async def test_qcow2_converted_on_the_server(self):
        """
        A qcow2 image (compressed clusters, a zero run, marked bytes) is
        staged, converted by the storage server's qemu-img into the volume
        (its bytes read back there), and its staging zvol is gone.
        """
        raw = b"".join(b"comet-qcow2 %08d " % i + os.urandom(4000) for i in range(600))
        raw += bytes(2 * MiB) + b"the end"
        image = await qcow2_of(raw, compressed=True)
        directory = temp_dir(self)
        with open(os.path.join(directory, "disk.qcow2"), "wb") as f:
            f.write(image)
        site = Site(File(directory))
        site.noisy = False
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        url = f"http://127.0.0.1:{listening.getHost().port}/disk.qcow2"
        pool = await self.pick_pool(len(raw) + 16 * MiB)
        server = next(s for s in self.stack["servers"] if s["storagepool"] == pool)
        name = f"it-{self.token}-qcow2"
        self.addCleanup(self._remove, pool, [name])
        answer = await self.request("POST", f"/storagepools/{pool}/storagevolumes",
                                    {"name": name, "url": url,
                                     "sha256": hashlib.sha256(image).hexdigest()})
        task = await self.wait_task(answer)
        self.assertEqual(task["status"], "finished", task)
        self.assertIn("qcow2", task["message"])
        volume = await self.get(f"/storagepools/{pool}/storagevolumes/{name}")
        self.assertEqual(volume["capacity"], GiB)
        zvol = f"{server['dataset']}/{name}"
        remote = await _testbed.ssh(
            self.stack, server, f"head -c {len(raw)} $(zvol-dev {zvol}) | sha256sum")
        self.assertEqual(remote.split()[0], hashlib.sha256(raw).hexdigest())
        listed = await _testbed.ssh(self.stack, server,
                                    f"zfs list -H -o name -t volume -r {server['dataset']}")
        self.assertNotIn(f"{name}.staging-", listed)

    async def _remove(self, pool, names):
        for name in names:
            await self.request("DELETE", f"/storagepools/{pool}/storagevolumes/{name}")
