"""
An image downloaded over HTTP(S) into a volume: the response body streamed
into the zvol's writer with flow control (L{Receiver}).  The steps of a
volume made so are L{comet.model.operations.volume_create}; where and how
images are fetched (address policy, slots, timeouts) is
L{comet.model.downloads}.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from comet.errors import Conflict, InvalidInput, Unavailable
from comet.remote.zfs import DECOMPRESSORS

#: The image formats a download takes: C{raw}, compressed raw (decompressed
#: on the storage server on its way into the zvol), C{qcow2} (staged in a
#: zvol of its own, then converted on the storage server:
#: L{comet.model.operations.volume_create}, L{comet.remote.qcow2}).
FORMATS = ("raw", "gzip", "xz", "zstd", "qcow2")
#: The format a URL's path suffix says (in any case), when the request names
#: none.  The path is all between the authority and the query or fragment
#: (C{urlsplit}'s, C{;} parameters included), so the request schema can say
#: the same with a pattern (L{comet.web.volume_requests}).
SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".xz": "xz", ".zst": "zstd", ".zstd": "zstd",
             ".qcow2": "qcow2", ".qcow": "qcow2"}
#: The Debian package each tool a storage server may lack comes in.
PACKAGES = {"gzip": "gzip", "xz": "xz-utils", "zstd": "zstd", "qemu-img": "qemu-utils"}
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def image_format(url: str, given: str | None) -> str:
    """The format of the image at C{url}: C{given}, else from its path's suffix, else raw."""
    if given is not None:
        if given not in FORMATS:
            raise InvalidInput(f"format must be one of {', '.join(FORMATS)}, not {given!r}")
        return given
    path = urlsplit(url).path.lower()
    return next((f for suffix, f in SUFFIXES.items() if path.endswith(suffix)), "raw")


def requested_format(capacity_gb: int | None, url: str | None, format: str | None,
                     sha256: str | None) -> str:
    """
    The format of the volume a creation asks for (C{raw} when empty), if
    its fields go together: C{capacity_gb} alone (empty), C{url} without
    it (a raw or qcow2 image, sized from its length or virtual size), or
    both (a compressed image: its size is known only once decompressed; a
    qcow2 image: the volume is made at least that large);
    C{format} and C{sha256} only with C{url}.  The request schema states
    the same (L{comet.web.volume_requests}).
    """
    if url is None and (format is not None or sha256 is not None):
        raise InvalidInput("format and sha256 describe an image: they go with url")
    if url is None and capacity_gb is None:
        raise InvalidInput("give exactly one of capacity and url")
    if url is None:
        return "raw"
    fmt = image_format(url, format)
    compressed = fmt in DECOMPRESSORS
    if compressed and capacity_gb is None:
        raise InvalidInput(f"a {fmt} image's size is known only once decompressed:"
                           " give capacity (GB) with url")
    if fmt == "raw" and capacity_gb is not None:
        raise InvalidInput("give exactly one of capacity and url (capacity goes with url"
                           " only for a compressed image, or a qcow2 one to make the volume"
                           " larger than its virtual size)")
    return fmt


def check_sha256(value: object) -> str:
    """C{value}, lowercased, if it is a SHA-256 in hex."""
    if not isinstance(value, str) or not _SHA256.match(value):
        raise InvalidInput(f"sha256 is 64 hexadecimal digits, not {value!r}")
    return value.lower()


async def check_server(zfs, pool, fmt: str) -> None:
    """
    A L{Conflict} naming what the storage server of C{pool} lacks to take an
    image of format C{fmt}: its decompressor, or C{qemu-img} for qcow2.
    """
    tool = "qemu-img" if fmt == "qcow2" else DECOMPRESSORS.get(fmt)
    if tool is None:
        return
    if not await zfs.has_command(tool):
        raise Conflict(
            f"storage server {pool.server} has no {tool} (Debian package {PACKAGES[tool]}):"
            f" a {fmt} image cannot be {'converted' if fmt == 'qcow2' else 'decompressed'}"
            f" there; give a raw{'' if fmt == 'qcow2' else ' or otherwise compressed'} image")


async def discard(response) -> None:
    """Read and drop what is left of C{response} (its connection is freed)."""
    try:
        import treq

        await treq.content(response)
    except Exception:
        pass


class Receiver(Protocol):
    """
    Streams an HTTP response body into a volume writer, with flow control
    (the response is paused while the pipe to C{dd} is full), reporting
    progress to the task.
    """

    def __init__(self, stream, length: int, task, hasher=None):
        self._stream = stream
        #: A C{hashlib} object fed every byte received, or C{None}.
        self.hasher = hasher
        self._length = length
        self._task = task
        self._received = 0
        self._last = -1
        self._error: BaseException | None = None
        self.done: Deferred = Deferred()

    def connectionMade(self):
        self._stream.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes):
        if self._error is not None:
            return
        self._received += len(data)
        if self.hasher is not None:
            self.hasher.update(data)
        d = self._stream.write(data)
        d.addErrback(self._failed)
        percent = min(99, 100 * self._received // self._length)
        if percent // 5 != self._last // 5:
            self._last = percent
            self._task.progress(percent, f"{self._received} of {self._length} bytes")

    def _failed(self, failure):
        if self._error is None:
            self._error = failure.value
            try:
                self.transport.stopProducing()
            except Exception:
                pass

    def connectionLost(self, reason):
        self._stream.unregisterProducer()
        if self._error is not None:
            self._stream.abort().addErrback(lambda _: None)
            self.done.errback(self._error)
        elif reason.check(ResponseDone) or (
                reason.check(PotentialDataLoss) and self._received == self._length):
            if self._received != self._length:
                self._stream.abort().addErrback(lambda _: None)
                self.done.errback(Unavailable(
                    f"the download ended after {self._received} of {self._length} bytes"))
            else:
                self.done.callback(None)
        else:
            self._stream.abort().addErrback(lambda _: None)
            self.done.errback(Unavailable(f"the download failed: {reason.getErrorMessage()}"))
