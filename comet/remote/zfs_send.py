"""
Copying a zvol from one ZFS machine to another, whole or incrementally: the
data path of local-copy mode (issue 21), which copies a VM's disk from its
storage server to its compute host at a start and the guest's changes back
at a stop.

C{zfs send} runs on the source and C{zfs receive} on the destination, each
through its machine's own L{comet.remote.IRunner} (ssh, one ControlMaster per
machine), and Comet pumps the stream from the first one's standard output
into the second one's standard input (L{pipe}).  Through Comet, not
C{ssh a 'zfs send' | ssh b 'zfs receive'} or a key on one machine for the
other: the machines need no trust between them (Comet holds the only keys,
and quotes every argument), and Comet sees every byte, so it counts them
(the bytes sent back are what the guest changed, which the bench checks),
reports progress, and can stop the copy.

Flow control is Twisted's producers and consumers: while the receiver's
pipe is full, the sender's output is not read, so the sender's ssh channel
fills and the remote C{zfs send} waits.  The stream is never held in memory
and the reactor never blocks; a copy of any size passes through a few pipe
and channel buffers.

A failure on either side ends both: the sender is killed, the receiver's
standard input is closed (so C{zfs receive} sees a stream cut short, fails,
and discards what it had received) and L{pipe} waits for it to exit, so that
when the L{Deferred} fails the destination is as it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from twisted.internet.defer import CancelledError, Deferred, DeferredList, inlineCallbacks
from twisted.internet.interfaces import IConsumer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from comet.errors import CommandFailed, Conflict, NotFound
from comet.remote._observed import Observed
from comet.remote.zfs import (
    OWNER_PROPERTY,
    ZFS,
    check_dataset,
    get_argv,
    parse_get,
    receive_abort_argv,
    receive_argv,
    send_argv,
    set_argv,
)

_log = Logger()

#: (pattern in C{zfs send}'s or C{zfs receive}'s standard error, the domain
#: error it means): a destination that exists, changed since the base, or
#: lacks the base is a conflict the caller must resolve, never overwritten.
_ERRORS: list[tuple[re.Pattern, type]] = [
    (re.compile(r"does not exist|no such pool"), NotFound),
    (re.compile(
        r"exists|has been modified|does not match incremental source|partially-complete|"
        r"not an earlier snapshot|out of space|is busy"
    ), Conflict),
]


def _translate(failure: Failure) -> Failure:
    """A failed send or receive whose message says why: L{NotFound} or L{Conflict}."""
    error = failure.value
    if isinstance(error, CommandFailed):
        reason = " ".join(error.stderr.split())  # ZFS wraps its messages
        for pattern, kind in _ERRORS:
            if pattern.search(reason):
                where = f" (on {error.server})" if error.server else ""
                raise kind(reason + where)
    return failure


@implementer(IConsumer)
class _Pump:
    """
    The sender's output consumer: it hands each piece to the receiver (whose
    pipe pauses the sender through the producer passed on to it) and counts
    the bytes.  Once the copy is being stopped it drops what still comes.
    """

    def __init__(self, receiver, progress: Callable[[int], object] | None):
        self.receiver = receiver
        self.progress = progress
        self.moved = 0
        self.open = True

    def registerProducer(self, producer, streaming):
        self.receiver.registerProducer(producer, streaming)

    def unregisterProducer(self):
        self.receiver.unregisterProducer()

    def write(self, data: bytes):
        if not self.open:
            return
        self.moved += len(data)
        # A write the receiver can no longer take fails; the receiver's own
        # end says why, so this Deferred's failure is not reported again.
        self.receiver.write(data).addErrback(lambda _: None)
        if self.progress is not None:
            self.progress(self.moved)


def _quietly(d: Deferred) -> None:
    """Observe a command's end only to let it go: the copy's result tells how it ended."""
    d.addErrback(lambda _: None)


class _Pipe:
    """One copy in flight: both commands, how each ended, and the result."""

    def __init__(self, source, source_argv, dest, dest_argv, progress):
        #: How the copy ended (bytes moved, or the failure), once both have exited.
        self.ended = Observed()
        # Fired (with None) when both have exited, or by its canceller at once:
        # either way it then waits for `ended`, so that a cancelled copy
        # fails only once the receiver has exited and discarded the stream.
        self.result = Deferred(self._cancel)
        self.result.addCallback(lambda _: self.ended.observe())
        self.cancelled = False
        self.sender_argv, self.receiver_argv = source_argv, dest_argv
        self.receiver = dest.run_stream(dest_argv, timeout=None)
        self.pump = _Pump(self.receiver, progress)
        self.sender = source.run_stream(source_argv, timeout=None, output=self.pump)
        sent = self.sender.finish()  # zfs send reads nothing: its stdin closes at once
        received = self.receiver.when_done()
        sent.addBoth(self._sender_ended)
        received.addBoth(self._receiver_ended)
        DeferredList([sent, received], consumeErrors=True).addCallback(self._both_ended)

    def _sender_ended(self, result):
        # All its output has been handed on (a process ends after its pipes
        # close): closing the receiver's input ends a whole stream, or cuts
        # one short, which the receiver then refuses and discards.
        _quietly(self.receiver.finish())
        return result

    def _receiver_ended(self, result):
        if isinstance(result, Failure):
            # Nothing more can go in: stop the sender (and its remote zfs
            # send, which dies on its next write to the closed channel).
            self.pump.open = False
            _quietly(self.sender.abort())
        return result

    def _cancel(self, result: Deferred):
        """
        Stop the copy: kill the sender, end the receiver's stream where it
        is.  The result fails with L{CancelledError} once both have exited
        (C{zfs receive} having discarded the stream it was cut off from).
        """
        self.cancelled = True
        self.pump.open = False
        _quietly(self.sender.abort())
        _quietly(self.receiver.finish())
        if not result.called:  # both may have ended already (at once, in a fake)
            result.callback(None)

    def _both_ended(self, outcomes):
        (sent_ok, sent), (received_ok, received) = outcomes
        if not (sent_ok and received_ok):
            # Which side ended how (the result carries one of them): what a
            # failed copy's cause is read from.
            _log.info("copy {sending} -> {receiving} ended: sender {sent}, receiver"
                      " {received} after {moved} bytes{cancelled}",
                      sending=" ".join(self.sender_argv[:3]),
                      receiving=" ".join(self.receiver_argv[:3]),
                      sent="ok" if sent_ok else repr(sent.value),
                      received="ok" if received_ok else repr(received.value),
                      moved=self.pump.moved, cancelled=" (cancelled)" if self.cancelled else "")
        if received_ok and not self.cancelled and (
                sent_ok or sent.check(CancelledError)):
            # zfs receive exits 0 only on a whole stream.  A sender seen
            # "cancelled" here was stopped after it: the receiver's input
            # closing as it exited stops its producer, which can come before
            # the sender's ssh client has its own exit status (a tiny stream).
            outcome = self.pump.moved
        elif self.cancelled:
            outcome = Failure(CancelledError("the copy was cancelled"))
        elif not sent_ok and not sent.check(CancelledError):
            outcome = sent  # the cause: the receiver only saw its stream end
        else:
            outcome = sent if received_ok else received
        self.ended.settle(outcome)
        if not self.result.called:
            self.result.callback(None)


def pipe(source, source_argv: Sequence[str], dest, dest_argv: Sequence[str],
         progress: Callable[[int], object] | None = None) -> Deferred:
    """
    Run C{source_argv} on runner C{source} and C{dest_argv} on runner
    C{dest}, the first one's standard output streamed into the second one's
    standard input, with flow control.

    @param progress: called with the number of bytes moved so far, as they move.
    @return: a L{Deferred} of the number of bytes moved once both have
        exited with status 0.  It fails with the first side's error if
        either fails (the other side is then ended, and this fires only once
        it has exited), with L{CancelledError} when cancelled.
    """
    return _Pipe(source, list(source_argv), dest, list(dest_argv), progress).result


@inlineCallbacks
def send(source, source_snapshot: str, dest, dest_volume: str, base: str | None = None,
         owner: str = "comet", progress: Callable[[int], object] | None = None):
    """
    Copy snapshot C{source_snapshot} of a volume on runner C{source}'s
    machine into volume C{dest_volume} on runner C{dest}'s machine, which
    then holds the same snapshot (same name and ZFS guid) and the volume's
    data as of it.

    Whole (C{base} L{None}): C{dest_volume} must not exist; it is made,
    tagged as C{owner}'s Comet's.  Incremental (C{base}, an earlier snapshot
    of the same source volume): C{dest_volume} must be C{owner}'s, hold
    C{base} as its newest snapshot and be unchanged since; only the blocks
    written between the two snapshots move.

    @param progress: called with the number of bytes moved so far.
    @return: L{Deferred} of the number of bytes moved (the stream's size).
        L{comet.errors.InvalidInput} for a bad name (before anything runs);
        L{NotFound} for a missing snapshot, base or destination dataset;
        L{Conflict} for a destination that exists (whole), changed or does
        not end at C{base} (incremental), or is not C{owner}'s: the
        destination is then left as it was.  A receive cut short (the
        sender failed, ssh to either lost, cancelled) fails too and leaves
        it as it was.
    """
    sending = send_argv(source_snapshot, base)
    receiving = receive_argv(dest_volume, {OWNER_PROPERTY: owner})
    snapname = source_snapshot.split("@")[1]
    if base is not None:
        yield ZFS(dest, owner=owner).check_owned(dest_volume)
    try:
        moved = yield pipe(source, sending, dest, receiving, progress).addErrback(_translate)
    except Exception:
        yield _clear_partial(dest, dest_volume)
        raise
    # zfs send without -p carries no user property: the received snapshot is
    # tagged here, so that Comet may later destroy it like its own.
    yield dest.run(set_argv(f"{dest_volume}@{snapname}", {OWNER_PROPERTY: owner})
                   ).addErrback(_translate)
    return moved


@inlineCallbacks
def _clear_partial(dest, volume: str):
    """
    After a failed receive: discard any resumable partial state left in
    C{volume} (a receive started with C{-s}, which Comet never does itself,
    or an older tool's), which would refuse every later receive into it.
    Best effort: the receive's own failure is what the caller hears.
    """
    check_dataset(volume)
    try:
        out = yield dest.run(get_argv([volume], ["receive_resume_token"]))
        token = parse_get(out).get((volume, "receive_resume_token"), ("-", "-"))[0]
        if token not in (None, "-", ""):
            _log.info("discarding the partial receive in {volume} on {host}",
                      volume=volume, host=dest.host)
            yield dest.run(receive_abort_argv(volume))
    except Exception as e:  # the volume is gone, or the machine: nothing to clear here
        _log.debug("no partial receive cleared in {volume}: {error}", volume=volume, error=e)



@inlineCallbacks
def newest_common(source, volume: str, dest, dest_volume: str):
    """
    The newest snapshot of C{volume} on runner C{source}'s machine that
    C{dest_volume} on runner C{dest}'s machine holds too (the same ZFS guid,
    whatever its name there): the base from which an incremental L{send}
    brings C{dest_volume} up to date.

    @return: L{Deferred} of the snapshot's full name on the source
        (C{volume@snap}), or L{None} when they share none or
        C{dest_volume} does not exist (then only a whole copy will do).
        L{NotFound} if C{volume} does not exist.
    """
    ours = yield _guids(source, volume)
    if ours is None:
        raise NotFound(f"volume {volume} does not exist on {source.host}")
    theirs = yield _guids(dest, dest_volume)
    if not theirs:
        return None
    held = set(theirs.values())
    snapshots = yield ZFS(source).list_snapshots(volume)
    for snapshot in reversed(snapshots):   # newest first
        if ours.get(snapshot.name) in held:
            return snapshot.name
    return None


@inlineCallbacks
def _guids(runner, volume: str):
    """C{{snapshot name: guid}} of C{volume}'s snapshots; L{None} if it does not exist."""
    try:
        out = yield runner.run(get_argv([volume], ["guid"], recursive=True)).addErrback(
            _translate)
    except NotFound:
        return None
    return {name: value for (name, _), (value, _) in parse_get(out).items() if "@" in name}
