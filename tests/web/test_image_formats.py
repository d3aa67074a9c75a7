"""
Volume downloads of compressed images (decompressed on the storage server)
and with a SHA-256 to match, and the formats a server cannot take (qcow2
without qemu-img, zstd without zstd) refused up front.  A real HTTP server
on loopback, the real API and models over in-memory storage servers.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os

from jsonschema import Draft202012Validator
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.static import File

from comet.config import StorageConfig
from comet.errors import InvalidInput
from comet.model.storage.download import FORMATS, image_format, requested_format
from comet.web.volume_requests import VOLUME_CREATE
from tests._qcow2 import qcow2_of, qcow2_with
from tests._util import temp_dir
from tests.web.test_downloads import FAST, DownloadCase, Recorder
from tests.web.test_serve import assertError

GiB = 1024**3
MiB = 1024**2


class FormatTests(TestCase):
    def test_format_from_the_url(self):
        for url, fmt in (("http://h/a.img", "raw"), ("http://h/a.img.gz", "gzip"),
                         ("http://h/a.raw.xz?x=1", "xz"), ("http://h/A.IMG.ZST", "zstd"),
                         ("http://h/a.qcow2", "qcow2"), ("http://h/gz", "raw")):
            self.assertEqual(image_format(url, None), fmt, url)
        self.assertEqual(image_format("http://h/a.gz", "raw"), "raw")   # told: as told


class RequestSchemaTests(TestCase):
    """
    The request schema of a volume's creation states the combinations of
    capacity, url, format and sha256 the model takes (the stateful fuzz run
    found {"format": "xz", "url": "http://A"} valid by the document and
    refused by the model with a 400).
    """

    URLS = ("http://h", "http://h/a.img", "http://h/a.gz", "https://h/A.IMG.XZ?x=1",
            "http://h/a.GZ?x.img", "http://h.gz", "http://h.gz/", "http://h/a.qcow2",
            "http://h/x.gz;a", "http://h/x;a.gz", "http://h/a.zst#f", "http://u:p@h/a.xz",
            "http://u:p@h.gz/", "http://h?q.gz", "http://h#/a.gz", "http://h/a.tar.Gzip",
            "http://h/a.gz/", "http://[::1]/a.zstd", "http://h:80/.gz", "http://h/.zst.x")

    def test_schema_takes_what_the_model_takes(self):
        schema = Draft202012Validator(VOLUME_CREATE)
        cases = 0
        for url in (None, *self.URLS):
            for fmt in (None, *FORMATS):
                for capacity in (None, 1):
                    for sha256 in (None, "ab" * 32):
                        given = {"url": url, "format": fmt, "capacity": capacity,
                                 "sha256": sha256}
                        body = {"name": "v", **{k: v for k, v in given.items() if v is not None}}
                        try:
                            requested_format(capacity, url, fmt, sha256)
                            model = True
                        except InvalidInput:
                            model = False
                        self.assertEqual(schema.is_valid(body), model, body)
                        cases += 1
        self.assertEqual(cases, 21 * 6 * 2 * 2)


class CompressedDownloadTests(DownloadCase):
    storage = StorageConfig(download_allow=("127.0.0.0/8",), **FAST)

    async def post(self, **fields):
        return await self.client.post("/storagepools/pool1/storagevolumes",
                                      {"name": "img", **fields})

    def data(self, name="img") -> bytes:
        return bytes(self.servers["s1"].datasets[f"tank/comet/{name}"].data)

    async def test_gzip_and_xz_decompressed_on_the_server(self):
        image = os.urandom(200000) + bytes(300000) + b"end"
        for fmt, compress, suffix in (("gzip", gzip.compress, ".gz"), ("xz", lzma.compress, ".xz")):
            url = self.serve(Recorder(compress(image))) + f"/image{suffix}"
            task = await self.wait(await self.post(url=url, capacity=1, name=f"img-{fmt}"))
            self.assertEqual(task["status"], "finished", task)
            self.assertIn(fmt, task["message"])
            self.assertEqual(self.data(f"img-{fmt}")[:len(image)], image)
            volume = (await self.client.get(f"/storagepools/pool1/storagevolumes/img-{fmt}")).json
            self.assertEqual(volume["capacity"], GiB)

    async def test_served_with_content_encoding(self):
        """
        A *.gz served with Content-Encoding: gzip (as Twisted's and Apache's
        file servers do) arrives as served, its length known, and is
        decompressed once, on the storage server.
        """
        image = os.urandom(70000) + bytes(70000)
        directory = temp_dir(self)
        with open(os.path.join(directory, "image.img.gz"), "wb") as f:
            f.write(gzip.compress(image))
        url = self.serve(File(directory)) + "/image.img.gz"
        task = await self.wait(await self.post(url=url, capacity=1))
        self.assertEqual(task["status"], "finished", task)
        self.assertEqual(self.data()[:len(image)], image)

    async def test_format_given(self):
        image = os.urandom(1000)
        url = self.serve(Recorder(gzip.compress(image))) + "/image"
        task = await self.wait(await self.post(url=url, capacity=1, format="gzip"))
        self.assertEqual(task["status"], "finished", task)
        self.assertEqual(self.data()[:1000], image)

    async def test_corrupt_stream_fails_and_removes(self):
        url = self.serve(Recorder(b"this is not gzip" * 100)) + "/image.gz"
        task = await self.wait(await self.post(url=url, capacity=1))
        self.assertEqual(task["status"], "failed", task)
        self.assertIn("not in gzip format", task["message"])
        self.assertNotIn("tank/comet/img", self.servers["s1"].datasets)

    async def test_sha256_matches(self):
        body = gzip.compress(os.urandom(5000))
        url = self.serve(Recorder(body)) + "/image.gz"
        digest = hashlib.sha256(body).hexdigest().upper()   # either case
        task = await self.wait(await self.post(url=url, capacity=1, sha256=digest))
        self.assertEqual(task["status"], "finished", task)
        self.assertIn("SHA-256 checked", task["message"])

    async def test_sha256_mismatch_fails_and_removes(self):
        """A mismatch fails the task, says both sums, and leaves no zvol and no record."""
        body = os.urandom(5000)
        url = self.serve(Recorder(body)) + "/image"
        wrong = "0" * 64
        task = await self.wait(await self.post(url=url, sha256=wrong))
        self.assertEqual(task["status"], "failed", task)
        self.assertIn(hashlib.sha256(body).hexdigest(), task["message"])
        self.assertIn(wrong, task["message"])
        self.assertNotIn("tank/comet/img", self.servers["s1"].datasets)
        answer = await self.client.get("/storagepools/pool1/storagevolumes/img")
        self.assertEqual(answer.code, 404)

    async def test_bad_requests_change_nothing(self):
        url = self.serve(Recorder(b"x")) + "/image"
        for fields, says in (
            ({"url": url + ".gz"}, "give capacity"),                 # compressed: size?
            ({"url": url, "capacity": 1}, "only for a compressed"),  # raw: one of them
            ({"capacity": 1, "sha256": "0" * 64}, "go with url"),
            ({"capacity": 1, "format": "gzip"}, "go with url"),
            ({"url": url, "sha256": "xyz"}, "sha256"),
            ({"url": url, "format": "vmdk"}, "format"),
        ):
            assertError(self, await self.post(**fields), 400, "bad_request", says)
        self.assertNothingMade()

    async def test_what_the_server_lacks_is_a_409(self):
        """zstd and qcow2 on a server without zstd and qemu-img: 409 naming what to install."""
        url = self.serve(Recorder(b"x"))
        answer = await self.post(url=url + "/image.zst", capacity=1)
        assertError(self, answer, 409, "conflict", "has no zstd (Debian package zstd)")
        answer = await self.post(url=url + "/image.qcow2")
        assertError(self, answer, 409, "conflict", "has no qemu-img (Debian package qemu-utils)")
        self.assertNothingMade()


class _Chunked(Resource):
    """Serves C{data} without a length (chunked)."""

    isLeaf = True

    def __init__(self, data: bytes):
        super().__init__()
        self.data = data

    def render_GET(self, request):
        request.write(self.data)
        request.finish()
        return NOT_DONE_YET


class Qcow2DownloadTests(DownloadCase):
    """
    qcow2 images (made by this machine's qemu-img): staged in a zvol of
    their own, checked, converted on the (fake) storage server's qemu-img;
    the staging zvol gone in every case.
    """

    storage = StorageConfig(download_allow=("127.0.0.0/8",), **FAST)

    def setUp(self):
        super().setUp()
        self.servers["s1"].commands |= {"qemu-img"}

    async def post(self, **fields):
        return await self.client.post("/storagepools/pool1/storagevolumes",
                                      {"name": "img", **fields})

    def zvols(self) -> list[str]:
        return sorted(n for n, d in self.servers["s1"].datasets.items() if d.type == "volume")

    def qemu_img_ran(self) -> list[list[str]]:
        return [c for c in self.ran() if c[0] == "qemu-img"]

    async def test_converted_on_the_server(self):
        """The volume holds the guest's bytes, is its virtual size in whole GiB; no staging left."""
        raw = os.urandom(200000) + bytes(500000) + b"end"
        for compressed in (False, True):
            image = await qcow2_of(raw, compressed)
            name = f"img{int(compressed)}"
            url = self.serve(Recorder(image)) + "/disk.qcow2"
            task = await self.wait(await self.post(url=url, name=name,
                                                   sha256=hashlib.sha256(image).hexdigest()))
            self.assertEqual(task["status"], "finished", task)
            self.assertIn("qcow2", task["message"])
            self.assertIn("SHA-256 checked", task["message"])
            data = bytes(self.servers["s1"].datasets[f"tank/comet/{name}"].data)
            self.assertEqual(data[:len(raw)], raw)
            self.assertEqual(data[len(raw):], bytes(len(data) - len(raw)))
            volume = (await self.client.get(f"/storagepools/pool1/storagevolumes/{name}")).json
            self.assertEqual(volume["capacity"], GiB)
        self.assertEqual(self.zvols(), ["tank/comet/img0", "tank/comet/img1"])

    async def test_capacity_makes_it_larger(self):
        """A capacity with a qcow2 image (by format, no suffix): the volume is that large."""
        image = await qcow2_of(os.urandom(5000))
        url = self.serve(Recorder(image)) + "/image"
        task = await self.wait(await self.post(url=url, format="qcow2", capacity=2))
        self.assertEqual(task["status"], "finished", task)
        volume = (await self.client.get("/storagepools/pool1/storagevolumes/img")).json
        self.assertEqual(volume["capacity"], 2 * GiB)

    async def test_backing_file_and_data_file_refused(self):
        """
        A qcow2 naming a backing file or an external data file fails the
        task before qemu-img opens it; nothing is left.
        """
        for image, says in ((await qcow2_with(MiB, backing="/etc/shadow"), "backing file"),
                            (await qcow2_with(MiB, data_file=True), "external data file"),
                            (os.urandom(70000), "not in qcow2 format")):
            url = self.serve(Recorder(image)) + "/image.qcow2"
            task = await self.wait(await self.post(url=url))
            self.assertEqual(task["status"], "failed", task)
            self.assertIn("is refused", task["message"])
            self.assertIn(says, task["message"])
            self.assertEqual(self.zvols(), [])
        self.assertEqual(self.qemu_img_ran(), [])

    async def test_sha256_mismatch_before_qemu_img(self):
        image = await qcow2_of(os.urandom(5000))
        url = self.serve(Recorder(image)) + "/image.qcow2"
        task = await self.wait(await self.post(url=url, sha256="0" * 64))
        self.assertEqual(task["status"], "failed", task)
        self.assertIn(hashlib.sha256(image).hexdigest(), task["message"])
        self.assertEqual(self.zvols(), [])
        self.assertEqual(self.qemu_img_ran(), [])

    async def test_no_length_fails(self):
        """A qcow2 served without a Content-Length cannot be staged: the task fails, nothing made."""
        url = self.serve(_Chunked(await qcow2_of(os.urandom(5000)))) + "/image"
        task = await self.wait(await self.post(url=url, format="qcow2"))
        self.assertEqual(task["status"], "failed", task)
        self.assertIn("did not say its length", task["message"])
        self.assertIn("cannot be staged", task["message"])
        self.assertNothingMade()

    async def test_bad_requests_change_nothing(self):
        url = self.serve(Recorder(b"x")) + "/image.qcow2"
        for fields, says in (({"url": url, "capacity": 0}, "capacity"),
                             ({"url": url, "format": "qcow2", "sha256": "xyz"}, "sha256")):
            assertError(self, await self.post(**fields), 400, "bad_request", says)
        self.assertNothingMade()
