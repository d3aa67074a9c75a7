"""
Volume create (C{volume.create}, object C{<pool>/<name>}): a zvol, empty or
holding an image downloaded over HTTP(S) (decompressed on the storage
server, its SHA-256 checked), then its record.

Repair: a recorded volume is complete (kept); otherwise the zvol it made
(if any, and if it carries Comet's tag) is destroyed.
"""

from __future__ import annotations

import enum
import hashlib
from typing import Sequence

import attrs

from comet.errors import Conflict, InvalidInput, NotFound
from comet.model.downloads import scrub
from comet.model.operations.context import Context, OperationType
from comet.model.storage.download import Receiver, discard
from comet.model.storage.names import GiB
from comet.model.storage.servers import undo
from comet.store import IntentRecord

KIND = "volume.create"


class Step(enum.Enum):
    CREATE_ZVOL = "create zvol"
    #: (A download only.)
    WRITE_IMAGE = "write image"
    RECORD = "record"


async def run_empty(op, zfs, pool, name: str, size: int, add_record) -> str:
    """
    Make volume C{name} of C{pool}, empty, of C{size} bytes, under intent
    C{op}; the zvol is destroyed again if its record cannot be written.

    @param zfs: the ZFS adapter of C{pool}'s server.
    @param add_record: called with the zvol's size, records the volume.
    """
    zvol = f"{pool.dataset}/{name}"
    async with op.step(Step.CREATE_ZVOL, server=pool.server, zvol=zvol):
        volume = await zfs.create_volume(pool.dataset, name, size, sparse=True)
    async with op.step(Step.RECORD, server=pool.server, zvol=zvol):
        try:
            await add_record(volume.size)
        except BaseException:
            await undo(zfs.destroy(volume.name), f"destroying {volume.name}")
            raise
    return f"volume {name!r} ({volume.size} bytes) created in storage pool {pool.name!r}"


@attrs.frozen
class Image:
    """How the downloaded bytes become the volume's."""

    #: A key of L{comet.remote.zfs.DECOMPRESSORS}, or C{None}: raw.
    compression: str | None = None
    #: The zvol's size in bytes (a compressed image's), or C{None}: from the length.
    size: int | None = None
    #: The SHA-256 (hex) the downloaded bytes must have, or C{None}.
    sha256: str | None = None


async def run_download(op, downloads, zfs, pool, name: str, url: str, task,
                       add_record, image: Image = Image()) -> str:
    """
    Make volume C{name} of C{pool} hold the image at C{url}, under intent
    C{op}: the zvol sized from the response's length (or C{image.size}),
    the body streamed into it (decompressed on the server), its SHA-256
    checked, the record written last; the zvol is destroyed again if
    anything fails.

    @param downloads: the L{comet.model.downloads.Downloads}.
    @param zfs: the ZFS adapter of C{pool}'s server.
    @param add_record: called with the zvol's size, records the volume.
    @return: what was done, for the task.
    """
    if downloads.waiting:
        task.progress(0, "waiting for a download slot ([storage] max_downloads)")
    download = await downloads.start(url)
    try:
        return await _write(op, pool, zfs, name, download, task, add_record, image)
    finally:
        download.close()


async def _write(op, pool, zfs, name: str, download, task, add_record, image: Image) -> str:
    response = download.response
    shown = scrub(download.url)
    if response.code != 200:
        await discard(response)
        raise NotFound(f"downloading {shown} failed: HTTP {response.code}")
    length = response.length
    if not isinstance(length, int) or length <= 0:
        await discard(response)
        raise InvalidInput(
            f"{shown} did not say its length (Content-Length); the volume cannot be sized"
        )
    size = image.size if image.size is not None else -(-length // GiB) * GiB
    try:
        space = await zfs.dataset_space(pool.dataset)
        if length > space.available:
            raise Conflict(f"the image at {shown} ({length} bytes) is larger than what"
                           f" storage pool {pool.name!r} has available ({space.available})")
        async with op.step(Step.CREATE_ZVOL, server=pool.server, zvol=f"{pool.dataset}/{name}"):
            volume = await zfs.create_volume(pool.dataset, name, size, sparse=True)
    except BaseException:
        await discard(response)
        raise
    try:
        async with op.step(Step.WRITE_IMAGE, server=pool.server, zvol=volume.name):
            stream = await zfs.open_writer(volume.name, image.compression)
            receiver = Receiver(stream, length, task,
                                hashlib.sha256() if image.sha256 is not None else None)
            response.deliverBody(receiver)
            try:
                await receiver.done
            except Exception as e:
                raise download.failure(e) from None
            # The writer ends normally before a mismatch is raised: one
            # killed over ssh may still hold the zvol open on the server a
            # moment (measured: the destroy that follows then fails "busy").
            await stream.finish()
            if receiver.hasher is not None and receiver.hasher.hexdigest() != image.sha256:
                raise Conflict(f"the image at {shown} has SHA-256 {receiver.hasher.hexdigest()},"
                               f" not {image.sha256} as given; the volume was removed")
        async with op.step(Step.RECORD, server=pool.server, zvol=volume.name):
            await add_record(volume.size)
    except BaseException:
        await undo(zfs.destroy(volume.name), f"destroying {volume.name}")
        raise
    how = f"{length} bytes" + (f", {image.compression}" if image.compression else "")
    checked = ", SHA-256 checked" if image.sha256 else ""
    return (f"volume {name!r} ({volume.size} bytes) created in storage pool"
            f" {pool.name!r} from {shown} ({how}{checked})")


async def repair(ctx: Context, obj: str, steps: Sequence[IntentRecord]) -> str:
    pool, name = obj.split("/", 1)
    if await ctx.storage.records.volume(pool, name) is not None:
        return f"volume {name!r} was complete and recorded: kept"
    zvols = [s.detail["zvol"] for s in steps if s.detail.get("zvol")]
    if not zvols:
        return "nothing had been made"
    server = next(s.detail["server"] for s in steps if s.detail.get("server"))
    zfs = ctx.storage.server(server).zfs
    try:
        await zfs.check_owned(zvols[0])
    except NotFound:
        return "no zvol had been made"
    except Conflict as e:
        return f"{zvols[0]} was left alone: {e.reason}"
    try:
        await zfs.destroy(zvols[0])
    except NotFound:
        return "no zvol had been made"
    # Another Conflict (busy: a writer still holds it) is tried again later.
    return f"the incomplete zvol {zvols[0]} on {server} was destroyed"


OPERATION = OperationType(kinds=(KIND,), steps=Step, repair=repair)
