"""
iSCSI targets on a storage server with tgt: L{TGT}, the asynchronous API the
model uses to export a zvol to a compute host and to withdraw it, and
L{translate}, which reads tgtadm's errors.  Target names and command lines
are built in L{comet.remote.tgt_commands}, C{tgtadm --op show} is read in
L{comet.remote.tgt_output}; both are re-exported here.

A target exports one zvol as LUN 1 (LUN 0 is tgt's own controller), to the
initiator addresses it is bound to, with an optional CHAP account.  CHAP
passwords never appear on a command line that Comet's host can see (the ssh
client's arguments are visible to every local user): a constant script on the
server reads the password from standard input and hands it to C{tgtadm}.

tgtadm exits 22 for every error; its message (C{tgtadm: can't find the
target}, C{tgtadm: this target already exists}, ...) says which.
"""

from __future__ import annotations

import re

from twisted.internet.defer import DeferredLock, inlineCallbacks

from comet.errors import CommandFailed, Conflict, InvalidInput, NotFound, Unavailable
from comet.remote.tgt_commands import (
    LUN,
    NEW_ACCOUNT_SCRIPT,
    accounts_argv,
    bind_account_argv,
    bind_address_argv,
    check_iqn,
    check_password,
    check_tid,
    check_user,
    delete_account_argv,
    delete_target_argv,
    iqn,
    new_account_argv,
    new_lun_argv,
    new_target_argv,
    show_argv,
    unbind_address_argv,
)
from comet.remote.tgt_output import (
    free_tid,
    Connection,
    Lun,
    ParseError,
    Target,
    parse_accounts,
    parse_targets,
)

__all__ = [
    "Connection",
    "LUN",
    "Lun",
    "NEW_ACCOUNT_SCRIPT",
    "NEW_TARGET_TRIES",
    "ParseError",
    "TGT",
    "Target",
    "accounts_argv",
    "bind_account_argv",
    "bind_address_argv",
    "check_iqn",
    "check_password",
    "check_tid",
    "check_user",
    "delete_account_argv",
    "delete_target_argv",
    "free_tid",
    "iqn",
    "new_account_argv",
    "new_lun_argv",
    "new_target_argv",
    "parse_accounts",
    "parse_targets",
    "show_argv",
    "translate",
    "unbind_address_argv",
]


#: How many times an export looks for a free target id again when another
#: process took the one it chose.
NEW_TARGET_TRIES = 5


# Errors

_ERRORS = [
    (re.compile(r"can't find the (target|account)"), NotFound),
    (re.compile(r"already exists|still active"), Conflict),
]


def translate(failure):
    """
    Turn a L{CommandFailed} of tgtadm that says what is wrong into
    L{NotFound} or L{Conflict}, or L{Unavailable} when tgtd itself is not
    running; anything else is returned unchanged.
    """
    error = failure.value
    if isinstance(error, CommandFailed):
        if "tgt daemon" in error.stderr:
            raise Unavailable(
                f"storage server {error.server} does not answer: its iSCSI target daemon"
                f" (tgtd) is not running ({error.stderr.splitlines()[0]})"
            )
        for pattern, kind in _ERRORS:
            if pattern.search(error.stderr):
                where = f" (on {error.server})" if error.server else ""
                raise kind(error.stderr.splitlines()[0] + where)
    return failure


# The API


class TGT:
    """
    iSCSI targets on one storage server, through an L{comet.remote.IRunner}.

    Only what picks a target id is serialised on one server (one
    L{DeferredLock} around reading the targets and creating the new one, and
    around unexports): the rest of an export (its LUN, address, account) runs
    beside other exports, so a cluster of VMs starting together does not wait
    for each of its disks' half-dozen commands one after the other.  Work on
    one CHAP account is serialised by a lock of its own.
    """

    def __init__(self, runner):
        self.runner = runner
        self._lock = DeferredLock()
        self._account_locks: dict[str, DeferredLock] = {}

    @property
    def host(self) -> str:
        return self.runner.host

    def _run(self, argv, **kw):
        return self.runner.run(argv, **kw).addErrback(translate)

    def targets(self):
        """@return: L{Deferred} of every L{Target} on the server."""
        return self._run(show_argv()).addCallback(parse_targets)

    def accounts(self):
        """@return: L{Deferred} of every CHAP account name on the server."""
        return self._run(accounts_argv()).addCallback(parse_accounts)

    def find(self, name: str):
        """@return: L{Deferred} of the L{Target} named C{name}, or L{None}."""
        check_iqn(name)
        return self.targets().addCallback(
            lambda ts: next((t for t in ts if t.iqn == name), None)
        )

    def export(self, name: str, device: str, chap_user: str | None = None,
               chap_password: str | None = None, initiator: str = "ALL",
               tid: int | None = None):
        """
        Export block C{device} as LUN 1 of target C{name}, to initiators at
        C{initiator}, with CHAP account C{chap_user} if given.  Exporting
        what is already exported the same way is a no-op.  An account may
        serve several targets (one per compute host, say): it then takes the
        newest password, and stays bound where it was.

        The new target takes target id C{tid} if given and free (an export
        made again after the server lost its targets keeps the id it had),
        else the smallest free one.

        @return: L{Deferred} of the target id; L{Conflict} if C{name} is
            exported with another device; L{NotFound} if there is no such
            device.  A half-made target is removed again.
        """
        check_iqn(name)
        new_lun_argv(1, LUN, device)
        bind_address_argv(1, initiator)
        if (chap_user is None) != (chap_password is None):
            raise InvalidInput("CHAP needs both a user and a password")
        if chap_user is not None:
            check_user(chap_user)
            check_password(chap_password)
        if tid is not None:
            check_tid(tid)
        return self._export(name, device, chap_user, chap_password, initiator, tid)

    def _exported(self, targets, name, device, chap_user) -> int | None:
        """The tid of C{name} if C{targets} has it exporting C{device}; L{Conflict} if another."""
        for target in targets:
            if target.iqn == name:
                if target.device == device and (chap_user is None or chap_user in target.accounts):
                    return target.tid
                raise Conflict(
                    f"iSCSI target {name} on {self.host} already exports"
                    f" {target.device or 'nothing'}"
                )
        return None

    @inlineCallbacks
    def _new_target(self, name, device, chap_user, preferred):
        """Under the lock: C{(targets, tid, made)}; C{made} false if already exported so."""
        targets = yield self.targets()
        for attempt in range(NEW_TARGET_TRIES):
            tid = self._exported(targets, name, device, chap_user)
            if tid is not None:
                return targets, tid, False
            tid = free_tid(targets, preferred)
            try:
                yield self._run(new_target_argv(tid, name))
                return targets, tid, True
            except Conflict:
                # The lock is this process's only: another one (another Comet
                # sharing the server, tgtadm by hand) took the free tid between
                # our show and our new.  Look again.
                if attempt == NEW_TARGET_TRIES - 1:
                    raise
                targets = yield self.targets()

    @inlineCallbacks
    def _export(self, name, device, chap_user, chap_password, initiator, preferred):
        targets, tid, made = yield self._lock.run(self._new_target, name, device, chap_user,
                                                  preferred)
        if not made:
            # Exported already (by an earlier start, or a version that let
            # any address in): admit C{initiator} only, from now on.
            acl = next((t.acl for t in targets if t.tid == tid), ())
            if initiator not in acl:
                yield self._run(bind_address_argv(tid, initiator))
            for other in acl:
                if other != initiator:
                    yield self._run(unbind_address_argv(tid, other))
            return tid
        rebind: list[int] = []
        try:
            try:
                yield self._run(new_lun_argv(tid, LUN, device))
            except CommandFailed as e:
                if "invalid request" in e.stderr:
                    raise NotFound(f"no block device {device} on {self.host}") from None
                raise
            yield self._run(bind_address_argv(tid, initiator))
            if chap_user is not None:
                lock = self._account_locks.setdefault(chap_user, DeferredLock())
                yield lock.run(self._account, chap_user, chap_password, tid, rebind)
        except Exception:
            yield self._lock.run(self._run, delete_target_argv(tid)).addErrback(lambda _: None)
            if chap_user is not None and not rebind:
                yield self._run(delete_account_argv(chap_user)).addErrback(lambda _: None)
            raise
        finally:
            lock = self._account_locks.get(chap_user)
            if lock is not None and not lock.locked and not lock.waiting:
                self._account_locks.pop(chap_user, None)
        return tid

    @inlineCallbacks
    def _account(self, chap_user, chap_password, tid, rebind: list[int]):
        """
        Make CHAP account C{chap_user} and bind it to C{tid}.  An existing
        account may hold another password: tgt cannot change one, so it is
        made anew and bound again wherever it was (those targets' ids are
        added to C{rebind} before the old account is deleted).
        """
        accounts = yield self.accounts()
        if chap_user in accounts:
            rebind += [t.tid for t in (yield self.targets())
                       if chap_user in t.accounts and t.tid != tid]
            yield self._run(delete_account_argv(chap_user))
        yield self._run(new_account_argv(chap_user), stdin=chap_password.encode() + b"\n")
        for bound in rebind + [tid]:
            yield self._run(bind_account_argv(bound, chap_user))

    def admit(self, name: str, initiator: str):
        """
        Let initiator address C{initiator} log in to target C{name} too,
        besides those it admits (a VM migrating: the destination host
        needs its disks before the source lets them go).

        @return: L{Deferred} of whether it was added (C{False}: admitted
            already); L{NotFound} if there is no such target.
        """
        check_iqn(name)
        bind_address_argv(1, initiator)
        return self._lock.run(self._admit, name, initiator)

    @inlineCallbacks
    def _admit(self, name, initiator):
        target = yield self._target(name)
        if initiator in target.acl:
            return False
        yield self._run(bind_address_argv(target.tid, initiator))
        return True

    def refuse(self, name: str, initiator: str):
        """
        Stop admitting initiator address C{initiator} to target C{name}
        (its sessions stay: a migrated VM's source has ended them already).

        @return: L{Deferred} of whether it was admitted; L{NotFound} if
            there is no such target.
        """
        check_iqn(name)
        bind_address_argv(1, initiator)
        return self._lock.run(self._refuse, name, initiator)

    @inlineCallbacks
    def _refuse(self, name, initiator):
        target = yield self._target(name)
        if initiator not in target.acl:
            return False
        yield self._run(unbind_address_argv(target.tid, initiator))
        return True

    @inlineCallbacks
    def _target(self, name):
        target = next((t for t in (yield self.targets()) if t.iqn == name), None)
        if target is None:
            raise NotFound(f"there is no iSCSI target {name} on {self.host}")
        return target

    def unexport(self, name: str):
        """
        Delete target C{name} (ending its sessions) and the CHAP accounts
        bound to no other target.

        @return: L{Deferred} of whether there was such a target.
        """
        check_iqn(name)
        return self._lock.run(self._unexport, name)

    @inlineCallbacks
    def _unexport(self, name):
        targets = yield self.targets()
        target = next((t for t in targets if t.iqn == name), None)
        if target is None:
            return False
        yield self._run(delete_target_argv(target.tid))
        elsewhere = {a for t in targets if t.tid != target.tid for a in t.accounts + t.outgoing}
        for account in target.accounts + target.outgoing:
            # (an export binding the account right now keeps it)
            if account not in elsewhere and account not in self._account_locks:
                yield self._run(delete_account_argv(account)).addErrback(
                    lambda f: f.trap(NotFound)
                )
        return True
