"""
Volume create (C{volume.create}, object C{<pool>/<name>}): a zvol, empty or
holding an image downloaded over HTTP(S) (decompressed on the storage
server, its SHA-256 checked), then its record.  A qcow2 image is first
downloaded into a staging zvol of its own (C{<name>.staging-<hex>}, tagged
as Comet's and with C{comet:staging=<name>}), whose image is checked and
converted into the volume's zvol on the server (L{comet.remote.qcow2}); the
staging zvol is destroyed before the record is written.

Repair: a staging zvol (if one was made, and carries Comet's tag) is
destroyed; a recorded volume is complete (kept); otherwise the zvol it made
(if any, and if it carries Comet's tag) is destroyed.  A failed create whose
own undo failed (its server stopped answering a moment) leaves its intent
for that repair, as a crash would.  Nothing else removes a staging zvol: one
this database has no intent for may be another Comet's download in progress
(Comet's tag says only that a Comet made it).
"""

from __future__ import annotations

import enum
import hashlib
import secrets
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
    #: (A qcow2 image only: staged, then converted.)
    CREATE_STAGING = "create staging zvol"
    WRITE_STAGING = "write staging zvol"
    CREATE_ZVOL = "create zvol"
    #: (A raw or compressed image only.)
    WRITE_IMAGE = "write image"
    #: (A qcow2 image only.)
    CONVERT = "convert image"
    DESTROY_STAGING = "destroy staging zvol"
    RECORD = "record"


#: The user property that marks a staging zvol, its value the volume's name.
STAGING_PROPERTY = "comet:staging"


def staging_name(name: str) -> str:
    """A new name for the staging zvol of volume C{name} (a valid name: 64 characters at most)."""
    return f"{name[:47]}.staging-{secrets.token_hex(4)}"


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
    #: The zvol's size in bytes (a compressed image's; a qcow2 image's at
    #: least), or C{None}: from the length (a qcow2's: its virtual size).
    size: int | None = None
    #: The SHA-256 (hex) the downloaded bytes must have, or C{None}.
    sha256: str | None = None
    #: A qcow2 image (staged, then converted on the server).
    qcow2: bool = False


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


def _length(download, image: Image) -> int:
    """The response's length; L{NotFound} for an error, L{InvalidInput} when it has none."""
    response, shown = download.response, scrub(download.url)
    if response.code != 200:
        raise NotFound(f"downloading {shown} failed: HTTP {response.code}")
    length = response.length
    if not isinstance(length, int) or length <= 0:
        what = ("the qcow2 image cannot be staged (in a zvol of its length)" if image.qcow2
                else "the volume cannot be sized")
        raise InvalidInput(f"{shown} did not say its length (Content-Length); {what}")
    return length


async def _check_space(zfs, pool, length: int, shown: str) -> None:
    space = await zfs.dataset_space(pool.dataset)
    if length > space.available:
        raise Conflict(f"the image at {shown} ({length} bytes) is larger than what"
                       f" storage pool {pool.name!r} has available ({space.available})")


async def _receive(zfs, zvol: str, download, length: int, task, image: Image) -> None:
    """Stream the download's body into C{zvol} (decompressed), its SHA-256 checked."""
    stream = await zfs.open_writer(zvol, image.compression)
    receiver = Receiver(stream, length, task,
                        hashlib.sha256() if image.sha256 is not None else None)
    download.response.deliverBody(receiver)
    try:
        await receiver.done
    except Exception as e:
        raise download.failure(e) from None
    # The writer ends normally before a mismatch is raised: one
    # killed over ssh may still hold the zvol open on the server a
    # moment (measured: the destroy that follows then fails "busy").
    await stream.finish()
    if receiver.hasher is not None and receiver.hasher.hexdigest() != image.sha256:
        raise Conflict(f"the image at {scrub(download.url)} has SHA-256"
                       f" {receiver.hasher.hexdigest()}, not {image.sha256} as given;"
                       " the volume was removed")


async def _write(op, pool, zfs, name: str, download, task, add_record, image: Image) -> str:
    response = download.response
    shown = scrub(download.url)
    try:
        length = _length(download, image)
    except BaseException:
        await discard(response)
        raise
    if image.qcow2:
        return await _convert(op, pool, zfs, name, download, task, add_record, image, length)
    try:
        size = image.size if image.size is not None else -(-length // GiB) * GiB
        await _check_space(zfs, pool, length, shown)
        async with op.step(Step.CREATE_ZVOL, server=pool.server, zvol=f"{pool.dataset}/{name}"):
            volume = await zfs.create_volume(pool.dataset, name, size, sparse=True)
    except BaseException:
        await discard(response)
        raise
    try:
        async with op.step(Step.WRITE_IMAGE, server=pool.server, zvol=volume.name):
            await _receive(zfs, volume.name, download, length, task, image)
        async with op.step(Step.RECORD, server=pool.server, zvol=volume.name):
            await add_record(volume.size)
    except BaseException:
        if not await undo(zfs.destroy(volume.name), f"destroying {volume.name}"):
            op.leave_for_repair()
        raise
    how = f"{length} bytes" + (f", {image.compression}" if image.compression else "")
    checked = ", SHA-256 checked" if image.sha256 else ""
    return (f"volume {name!r} ({volume.size} bytes) created in storage pool"
            f" {pool.name!r} from {shown} ({how}{checked})")


async def _convert(op, pool, zfs, name: str, download, task, add_record, image: Image,
                   length: int) -> str:
    """
    A qcow2 image: downloaded into a staging zvol of its length, its
    virtual size read (the image checked), the volume's zvol made that
    size (rounded up to whole GiB, or C{image.size} if larger), the image
    converted into it, the staging zvol destroyed, the record written.
    """
    shown = scrub(download.url)
    where = dict(server=pool.server, staging=f"{pool.dataset}/{staging_name(name)}")
    staging = where["staging"]
    try:
        await _check_space(zfs, pool, length, shown)
        async with op.step(Step.CREATE_STAGING, **where):
            await zfs.create_volume(pool.dataset, staging.rsplit("/", 1)[1], length,
                                    properties={STAGING_PROPERTY: name}, sparse=True)
    except BaseException:
        await discard(download.response)
        raise
    volume = None
    staged = True
    try:
        async with op.step(Step.WRITE_STAGING, **where):
            await _receive(zfs, staging, download, length, task, image)
        task.progress(99, "checking and converting the qcow2 image on the storage server")
        try:
            virtual = await zfs.image_size(staging)
        except InvalidInput as e:
            raise InvalidInput(f"the image at {shown} is refused: {e.reason}") from None
        size = max(-(-virtual // GiB) * GiB, image.size or 0)
        where["zvol"] = f"{pool.dataset}/{name}"
        async with op.step(Step.CREATE_ZVOL, **where):
            volume = await zfs.create_volume(pool.dataset, name, size, sparse=True)
        async with op.step(Step.CONVERT, **where):
            await zfs.convert_image(staging, volume.name)
        async with op.step(Step.DESTROY_STAGING, **where):
            await zfs.destroy(staging)
            staged = False
        async with op.step(Step.RECORD, server=pool.server, zvol=volume.name):
            await add_record(volume.size)
    except BaseException:
        undone = True
        if volume is not None:
            undone = await undo(zfs.destroy(volume.name), f"destroying {volume.name}")
        if staged:
            undone = await undo(zfs.destroy(staging), f"destroying {staging}") and undone
        if not undone:
            op.leave_for_repair()
        raise
    checked = ", SHA-256 checked" if image.sha256 else ""
    return (f"volume {name!r} ({volume.size} bytes) created in storage pool"
            f" {pool.name!r} from {shown} ({length} bytes, qcow2 of {virtual} bytes,"
            f" converted{checked})")


async def _destroy_staging(ctx: Context, steps: Sequence[IntentRecord]) -> str | None:
    """Destroy the staging zvol the steps name (if any was made, and is Comet's)."""
    step = next((s for s in steps if s.detail.get("staging")), None)
    if step is None:
        return None
    staging, server = step.detail["staging"], step.detail["server"]
    zfs = ctx.storage.server(server).zfs
    try:
        await zfs.check_owned(staging)
    except NotFound:
        return "no staging zvol was left"
    except Conflict as e:
        return f"{staging} was left alone: {e.reason}"
    try:
        await zfs.destroy(staging)
    except NotFound:
        return "no staging zvol was left"
    # Another Conflict (busy: qemu-img still reads it) is tried again later.
    return f"the staging zvol {staging} on {server} was destroyed"


async def repair(ctx: Context, obj: str, steps: Sequence[IntentRecord]) -> str:
    staging = await _destroy_staging(ctx, steps)
    what = await _repair_volume(ctx, obj, steps)
    return what if staging is None else f"{staging}; {what}"


async def _repair_volume(ctx: Context, obj: str, steps: Sequence[IntentRecord]) -> str:
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
