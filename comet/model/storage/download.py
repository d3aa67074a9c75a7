"""
A volume made from an image downloaded over HTTP(S): the zvol sized from
the response's length, the body streamed into it with flow control, the
record written last.  Where and how images are fetched (address policy,
slots, timeouts) is L{comet.model.downloads}.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from comet.errors import Conflict, InvalidInput, NotFound, Unavailable
from comet.model.downloads import scrub
from comet.model.storage.names import GiB
from comet.model.storage.servers import undo


async def download_volume(downloads, op, pool, zfs, name: str, url: str, task,
                          add_record) -> str:
    """
    Make volume C{name} of C{pool} hold the image at C{url}, under intent
    C{op} (steps C{create zvol}, C{write image}, C{record}); the zvol is
    destroyed again if anything fails.

    @param downloads: the L{comet.model.downloads.Downloads}.
    @param zfs: the ZFS adapter of C{pool}'s server.
    @param add_record: called with the zvol's size, records the volume.
    @return: what was done, for the task.
    """
    if downloads.waiting:
        task.progress(0, "waiting for a download slot ([storage] max_downloads)")
    download = await downloads.start(url)
    try:
        return await _write(op, pool, zfs, name, download, task, add_record)
    finally:
        download.close()


async def _write(op, pool, zfs, name: str, download, task, add_record) -> str:
    response = download.response
    shown = scrub(download.url)
    if response.code != 200:
        await _discard(response)
        raise NotFound(f"downloading {shown} failed: HTTP {response.code}")
    length = response.length
    if not isinstance(length, int) or length <= 0:
        await _discard(response)
        raise InvalidInput(
            f"{shown} did not say its length (Content-Length); the volume cannot be sized"
        )
    size = -(-length // GiB) * GiB
    try:
        space = await zfs.dataset_space(pool.dataset)
        if length > space.available:
            raise Conflict(f"the image at {shown} ({length} bytes) is larger than what"
                           f" storage pool {pool.name!r} has available ({space.available})")
        async with op.step("create zvol", server=pool.server, zvol=f"{pool.dataset}/{name}"):
            volume = await zfs.create_volume(pool.dataset, name, size, sparse=True)
    except BaseException:
        await _discard(response)
        raise
    try:
        async with op.step("write image", server=pool.server, zvol=volume.name):
            stream = await zfs.open_writer(volume.name)
            receiver = Receiver(stream, length, task)
            response.deliverBody(receiver)
            try:
                await receiver.done
            except Exception as e:
                raise download.failure(e) from None
            await stream.finish()
        async with op.step("record", server=pool.server, zvol=volume.name):
            await add_record(volume.size)
    except BaseException:
        await undo(zfs.destroy(volume.name), f"destroying {volume.name}")
        raise
    return (f"volume {name!r} ({volume.size} bytes) created in storage pool"
            f" {pool.name!r} from {shown} ({length} bytes)")


async def _discard(response) -> None:
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

    def __init__(self, stream, length: int, task):
        self._stream = stream
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
