"""
What L{comet.remote.FakeStorageServer} holds (datasets, targets), how one of
its commands fails, and how it reads command options.
"""

from __future__ import annotations

import random
import re

import attrs

from comet.remote import zfs as _zfs
from comet.remote._fake import Answer


class _Error(Exception):
    """A command's failure: exit status and standard error."""

    def __init__(self, stderr: str, code: int = 1):
        super().__init__(stderr)
        self.answer = Answer(code=code, stderr=stderr)


def _missing(name: str) -> _Error:
    return _Error(f"cannot open '{name}': dataset does not exist")


@attrs.define
class _Dataset:
    name: str
    type: str  # "filesystem", "volume" or "snapshot"
    created: int
    createtxg: int
    props: dict[str, str] = attrs.Factory(dict)
    volsize: int = 0
    volblocksize: int = _zfs.DEFAULT_VOLBLOCKSIZE
    reservation: int = 0
    data: bytearray = attrs.Factory(bytearray)
    origin: str | None = None
    #: ZFS's guid: what a snapshot keeps when it is sent to another pool,
    #: and what an incremental receive checks its base by.
    guid: int = attrs.Factory(lambda: random.getrandbits(63) | 1)


@attrs.define
class _Target:
    tid: int
    iqn: str
    luns: dict[int, str] = attrs.Factory(dict)
    acl: list[str] = attrs.Factory(list)
    accounts: list[str] = attrs.Factory(list)
    outgoing: list[str] = attrs.Factory(list)
    connections: list[tuple[str, str]] = attrs.Factory(list)


def _parse_options(args: list[str], flags: str, valued: str) -> tuple[dict, list[str]]:
    """
    getopt for C{zfs}: single-letter C{flags}, C{valued} letters taking a
    value (repeatable ones collect into lists); returns (options, operands).
    """
    options: dict = {}
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        arg = args[i]
        j = 1
        while j < len(arg):
            letter = arg[j]
            if letter in valued:
                value = arg[j + 1:] or (args[i + 1] if i + 1 < len(args) else None)
                if value is None:
                    raise _Error(f"missing argument for '-{letter}' option", 2)
                if not arg[j + 1:]:
                    i += 1
                options.setdefault(letter, []).append(value)
                break
            if letter not in flags:
                raise _Error(f"invalid option '{letter}'", 2)
            options[letter] = True
            j += 1
        i += 1
    return options, args[i:]


def _size(text: str) -> int:
    match = re.fullmatch(r"([0-9]+)([KMGT]?)", text)
    if not match:
        raise _Error(f"bad numeric value '{text}'", 2)
    return int(match.group(1)) * 1024 ** " KMGT".index(match.group(2) or " ")


def _props(options: dict) -> dict[str, str]:
    result = {}
    for item in options.get("o", []):
        key, sep, value = item.partition("=")
        if not sep:
            raise _Error(f"missing '=' for property=value argument", 2)
        result[key] = value
    return result
