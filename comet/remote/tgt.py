"""
iSCSI targets on a storage server with tgt: command lines, a parser of
C{tgtadm --op show}, target names, and L{TGT}, the asynchronous API the model
uses to export a zvol to a compute host and to withdraw it.

A target exports one zvol as LUN 1 (LUN 0 is tgt's own controller), to the
initiator addresses it is bound to, with an optional CHAP account.  CHAP
passwords never appear on a command line that Comet's host can see (the ssh
client's arguments are visible to every local user): a constant script on the
server reads the password from standard input and hands it to C{tgtadm}.

tgtadm exits 22 for every error; its message (C{tgtadm: can't find the
target}, C{tgtadm: this target already exists}, ...) says which.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence

import attrs
from twisted.internet.defer import DeferredLock, inlineCallbacks

from comet.errors import CommandFailed, Conflict, InvalidInput, NotFound, Unavailable
from comet.names import check_name

_TGTADM = ["tgtadm", "--lld", "iscsi"]

#: The LUN that carries the exported zvol.
LUN = 1

#: Reads a CHAP password from the first line of standard input and creates
#: account C{$1} with it.
NEW_ACCOUNT_SCRIPT = (
    'IFS= read -r p || [ -n "$p" ] || exit 1\n'
    'exec tgtadm --lld iscsi --mode account --op new --user "$1" --password "$p"\n'
)

_IQN = re.compile(r"^iqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[a-z0-9.:-]+)?$")
_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_PASSWORD = re.compile(r"^[\x21-\x7e]{12,255}$")
_ADDRESS = re.compile(r"^(ALL|[0-9A-Fa-f.:]+(/[0-9]{1,3})?)$")


class ParseError(ValueError):
    """Output of tgtadm that does not have the expected shape."""


# Names


def iqn(domain: str, pool: str, volume: str, today: datetime.date) -> str:
    """
    The target name of C{volume} in storage pool C{pool}:
    C{iqn.<yyyy-mm>.<domain>:<pool>.<volume>}, lowercase, C{_} written as
    C{-} (tgt refuses C{_}).  C{today} fixes the date part, which by the
    iSCSI rules is a month in which the naming authority held C{domain}.

    Two volumes whose names differ only in case or in C{_}/C{-} get the same
    name; L{TGT.export} refuses the second with L{Conflict}.

    @raise InvalidInput: a part is not a valid name.
    """
    if not check_name(pool) or not check_name(volume):
        raise InvalidInput(f"not a valid pool or volume name: {pool!r}, {volume!r}")
    domain = str(domain).lower()
    if not _DOMAIN.match(domain):
        raise InvalidInput(f"not a valid iSCSI naming domain: {domain!r}")
    return check_iqn(f"iqn.{today:%Y-%m}.{domain}:{pool}.{volume}".lower().replace("_", "-"))


def check_iqn(name: object) -> str:
    """@raise InvalidInput: C{name} is not an IQN tgt accepts."""
    if not isinstance(name, str) or len(name) > 223 or not _IQN.match(name):
        raise InvalidInput(f"not an iSCSI qualified name: {name!r}")
    return name


def check_user(user: object) -> str:
    """@raise InvalidInput: C{user} is not an acceptable CHAP user name."""
    if not isinstance(user, str) or not _USER.match(user):
        raise InvalidInput(f"not a CHAP user name: {user!r}")
    return user


def check_password(password: object) -> str:
    """
    @raise InvalidInput: C{password} is not 12 to 255 printable ASCII
        characters without spaces (12 is the least many initiators accept).
    """
    if not isinstance(password, str) or not _PASSWORD.match(password):
        raise InvalidInput("a CHAP password is 12 to 255 printable ASCII characters, no spaces")
    return password


def _tid(tid: object) -> str:
    if isinstance(tid, bool) or not isinstance(tid, int) or tid < 1:
        raise InvalidInput(f"not a target id: {tid!r}")
    return str(tid)


# Command lines


def show_argv() -> list[str]:
    """Every target, its LUNs, accounts and ACL; see L{parse_targets}."""
    return _TGTADM + ["--mode", "target", "--op", "show"]


def accounts_argv() -> list[str]:
    """Every CHAP account; see L{parse_accounts}."""
    return _TGTADM + ["--mode", "account", "--op", "show"]


def new_target_argv(tid: int, name: str) -> list[str]:
    return _TGTADM + ["--mode", "target", "--op", "new", "--tid", _tid(tid),
                      "--targetname", check_iqn(name)]


def new_lun_argv(tid: int, lun: int, device: str) -> list[str]:
    """LUN C{lun} of target C{tid}, backed by block device C{device}."""
    if not isinstance(device, str) or not re.fullmatch(r"/dev/[A-Za-z0-9/_.-]+", device):
        raise InvalidInput(f"not a device path: {device!r}")
    return _TGTADM + ["--mode", "logicalunit", "--op", "new", "--tid", _tid(tid),
                      "--lun", str(int(lun)), "--backing-store", device]


def bind_address_argv(tid: int, address: str = "ALL") -> list[str]:
    """Let initiators at C{address} (an IP address, a network, or C{ALL}) in."""
    if not isinstance(address, str) or not _ADDRESS.match(address):
        raise InvalidInput(f"not an initiator address: {address!r}")
    return _TGTADM + ["--mode", "target", "--op", "bind", "--tid", _tid(tid),
                      "--initiator-address", address]


def unbind_address_argv(tid: int, address: str) -> list[str]:
    """Stop letting initiators at C{address} in (one entry of the target's ACL)."""
    if not isinstance(address, str) or not _ADDRESS.match(address):
        raise InvalidInput(f"not an initiator address: {address!r}")
    return _TGTADM + ["--mode", "target", "--op", "unbind", "--tid", _tid(tid),
                      "--initiator-address", address]


def new_account_argv(user: str) -> list[str]:
    """Create CHAP account C{user}; its password goes on standard input, one line."""
    return ["sh", "-c", NEW_ACCOUNT_SCRIPT, "comet-chap", check_user(user)]


def bind_account_argv(tid: int, user: str) -> list[str]:
    return _TGTADM + ["--mode", "account", "--op", "bind", "--tid", _tid(tid),
                      "--user", check_user(user)]


def delete_target_argv(tid: int) -> list[str]:
    """Delete target C{tid}, ending any sessions on it."""
    return _TGTADM + ["--mode", "target", "--op", "delete", "--force", "--tid", _tid(tid)]


def delete_account_argv(user: str) -> list[str]:
    return _TGTADM + ["--mode", "account", "--op", "delete", "--user", check_user(user)]


# Parsers


@attrs.frozen
class Lun:
    """
    A logical unit of a target.

    @ivar size_mb: its size as tgt shows it, in units of 1,000,000 bytes.
    @ivar backing_store: the device or file behind it, L{None} for the controller.
    """

    number: int
    type: str
    size_mb: int
    backing_store: str | None
    backing_store_type: str


@attrs.frozen
class Connection:
    """An initiator logged in to a target."""

    initiator: str
    address: str | None


@attrs.frozen
class Target:
    """
    An iSCSI target as C{tgtadm --op show} describes it.

    @ivar accounts: CHAP accounts bound to it (incoming).
    @ivar outgoing: outgoing (mutual CHAP) accounts bound to it.
    @ivar acl: initiator addresses allowed in (C{ALL} for any).
    @ivar connections: initiators logged in now.
    """

    tid: int
    iqn: str
    state: str
    luns: tuple[Lun, ...]
    accounts: tuple[str, ...]
    outgoing: tuple[str, ...]
    acl: tuple[str, ...]
    connections: tuple[Connection, ...]

    def lun(self, number: int = LUN) -> Lun | None:
        for lun in self.luns:
            if lun.number == number:
                return lun
        return None

    @property
    def device(self) -> str | None:
        """The backing store of LUN 1: the exported zvol's device."""
        lun = self.lun(LUN)
        return lun.backing_store if lun is not None else None


_TARGET = re.compile(r"^Target ([0-9]+): (\S+)$")
_SECTIONS = {
    "System information:": "system",
    "I_T nexus information:": "nexus",
    "LUN information:": "lun",
    "Account information:": "account",
    "ACL information:": "acl",
}


def parse_targets(output: bytes | str) -> list[Target]:
    """
    Read the output of L{show_argv}.

    @raise ParseError: it does not look like tgtadm's.
    """
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    targets: list[Target] = []
    current: dict | None = None
    section = None
    lun: dict | None = None

    def close_lun():
        nonlocal lun
        if lun is not None and current is not None:
            size = re.match(r"([0-9]+) MB", lun.get("Size", "0 MB"))
            path = lun.get("Backing store path")
            current["luns"].append(Lun(
                number=lun["number"], type=lun.get("Type", ""),
                size_mb=int(size.group(1)) if size else 0,
                backing_store=None if path in (None, "None") else path,
                backing_store_type=lun.get("Backing store type", ""),
            ))
        lun = None

    def close_target():
        close_lun()
        if current is not None:
            targets.append(Target(
                tid=current["tid"], iqn=current["iqn"], state=current["state"],
                luns=tuple(current["luns"]), accounts=tuple(current["accounts"]),
                outgoing=tuple(current["outgoing"]), acl=tuple(current["acl"]),
                connections=tuple(Connection(i, a) for i, a in current["connections"]),
            ))

    for line in text.splitlines():
        if not line.strip():
            continue
        match = _TARGET.match(line)
        if match:
            close_target()
            current = dict(tid=int(match.group(1)), iqn=match.group(2), state="", luns=[],
                           accounts=[], outgoing=[], acl=[], connections=[])
            section = None
            continue
        if current is None:
            raise ParseError(f"tgtadm output does not start with a target: {line!r}")
        stripped = line.strip()
        if stripped in _SECTIONS and line.startswith("    ") and not line.startswith("     "):
            close_lun()
            section = _SECTIONS[stripped]
            continue
        key, _, value = stripped.partition(": ")
        if section == "system":
            if key == "State":
                current["state"] = value
        elif section == "nexus":
            if key == "Initiator":
                current["connections"].append([value.split(" alias:")[0], None])
            elif key == "IP Address" and current["connections"]:
                current["connections"][-1][1] = value
        elif section == "lun":
            if key == "LUN":
                close_lun()
                lun = {"number": int(value)}
            elif lun is not None:
                lun[key.rstrip(":")] = value
        elif section == "account":
            if stripped.endswith(" (outgoing)"):
                current["outgoing"].append(stripped[: -len(" (outgoing)")])
            else:
                current["accounts"].append(stripped)
        elif section == "acl":
            current["acl"].append(stripped)
    close_target()
    return targets


def parse_accounts(output: bytes | str) -> list[str]:
    """Read the output of L{accounts_argv}: the account names."""
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    lines = [l for l in text.splitlines() if l.strip()]
    if lines and lines[0].strip() != "Account list:":
        raise ParseError(f"not a tgtadm account list: {lines[0]!r}")
    return [l.strip() for l in lines[1:]]


#: How many times an export looks for a free target id again when another
#: process took the one it chose.
NEW_TARGET_TRIES = 5


def free_tid(targets: Sequence[Target], preferred: int | None = None) -> int:
    """C{preferred} if no target uses it, else the smallest target id not in use."""
    used = {t.tid for t in targets}
    if preferred is not None and preferred not in used:
        return preferred
    tid = 1
    while tid in used:
        tid += 1
    return tid


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
            _tid(tid)
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
