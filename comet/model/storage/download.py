"""
An image downloaded over HTTP(S) into a volume: the response body streamed
into the zvol's writer with flow control (L{Receiver}).  The steps of a
volume made so are L{comet.model.operations.volume_create}; where and how
images are fetched (address policy, slots, timeouts) is
L{comet.model.downloads}.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from comet.errors import Unavailable


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
