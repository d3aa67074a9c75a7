"""
The output of C{tgtadm}, read: C{--op show} into L{Target} values (with
their L{Lun}s and L{Connection}s), account lists, and the free target ids
among targets.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs

from comet.remote.tgt_commands import LUN


class ParseError(ValueError):
    """Output of tgtadm that does not have the expected shape."""


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


def free_tid(targets: Sequence[Target], preferred: int | None = None) -> int:
    """C{preferred} if no target uses it, else the smallest target id not in use."""
    used = {t.tid for t in targets}
    if preferred is not None and preferred not in used:
        return preferred
    tid = 1
    while tid in used:
        tid += 1
    return tid
