"""
Bringing one copy of a zvol up to date with another, on two ZFS machines:
the step that local-copy mode (issue 21) takes at a VM's start (storage
server to compute host) and at its stop or unmap (back), built on
L{comet.remote.zfs_send}.

A sync snapshots the source as C{@comet-sync-<n>} (a name Comet alone gives,
L{SYNC_PREFIX}), sends it whole when the destination has no copy or
incrementally from the newest snapshot both hold (L{newest_common}: only
the blocks written since move), then removes the older sync snapshots on
both sides, so that each side keeps exactly the one the next sync starts
from.  The VM's own snapshots (C{comet snapshot}) are never touched.

Every step can be repeated after a crash: a sync snapshot left by an
interrupted sync is an older one the next sync removes; a receive cut short
leaves the destination as it was (L{comet.remote.zfs_send.send}); a
destination that changed since the common snapshot is refused with
L{comet.errors.Conflict}, never overwritten (there the newest data may be,
and only an operator can say which copy wins).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

import attrs
from twisted.internet.defer import inlineCallbacks

from comet.errors import InvalidInput, NotFound
from comet.remote.zfs import ZFS
from comet.remote.zfs_send import newest_common, send

#: The snapshots a sync makes: C{comet-sync-<16 hex digits>}.
SYNC_PREFIX = "comet-sync-"
_SYNC = re.compile(re.escape(SYNC_PREFIX) + r"[0-9a-f]{16}")


def sync_name() -> str:
    """A new sync snapshot's name (C{comet-sync-<16 hex digits>})."""
    return SYNC_PREFIX + secrets.token_hex(8)


def is_sync(snapname: str) -> bool:
    """Whether C{snapname} (the part after C{@}) is a sync snapshot's."""
    return bool(_SYNC.fullmatch(snapname))


@attrs.frozen
class Synced:
    """
    What a sync did.

    @ivar snapshot: the sync snapshot both copies now end at (its name after C{@}).
    @ivar base: the snapshot the increment started from, or L{None} (a whole copy).
    @ivar moved: bytes of the stream (what crossed the network).
    @ivar removed: the older sync snapshots removed (full names), on both sides.
    """

    snapshot: str
    base: str | None
    moved: int
    removed: tuple[str, ...]


@inlineCallbacks
def sync(source, volume: str, dest, dest_volume: str, owner: str = "comet",
         snapname: str | None = None, progress: Callable[[int], object] | None = None):
    """
    Make C{dest_volume} on runner C{dest}'s machine hold what C{volume} on
    runner C{source}'s machine holds now.

    @param snapname: the sync snapshot's name (L{sync_name} if not given;
        an operation writes it in its intent before calling).
    @param progress: called with the bytes moved so far.
    @return: L{Deferred} of L{Synced}.  L{NotFound} for a missing source
        volume (or destination dataset); L{Conflict} for a destination that
        is not C{owner}'s or changed since the snapshot both hold (it is
        left as it was).
    """
    snapname = snapname or sync_name()
    if not is_sync(snapname):
        raise InvalidInput(f"not a sync snapshot's name: {snapname!r}")
    yield ZFS(source, owner=owner).snapshot([volume], snapname)   # NotFound if it is not there
    base = yield newest_common(source, volume, dest, dest_volume)
    moved = yield send(source, f"{volume}@{snapname}", dest, dest_volume, base=base,
                       owner=owner, progress=progress)
    removed = []
    for runner, name in ((source, volume), (dest, dest_volume)):
        removed += (yield _prune(ZFS(runner, owner=owner), name, snapname))
    return Synced(snapname, base.split("@")[1] if base else None, moved, tuple(removed))


@inlineCallbacks
def _prune(zfs: ZFS, volume: str, keep: str):
    """Destroy C{volume}'s sync snapshots other than C{keep}: those older syncs left."""
    removed = []
    for snapshot in (yield zfs.list_snapshots(volume)):
        if is_sync(snapshot.snapname) and snapshot.snapname != keep:
            try:
                yield zfs.destroy(snapshot.name)
            except NotFound:
                continue
            removed.append(snapshot.name)
    return removed
