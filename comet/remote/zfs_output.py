"""
The output of ZFS commands, read: C{-H -p} listings into L{Volume},
L{Snapshot}, L{Pool} values and C{zfs get} answers into a dict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from comet.remote.zfs_commands import (
    GET_COLUMNS,
    OWNER_PROPERTY,
    POOL_COLUMNS,
    SNAPSHOT_COLUMNS,
    VOLUME_COLUMNS,
)


class ParseError(ValueError):
    """Output of a ZFS command that does not have the expected shape."""


# Parsers


def parse_rows(output: bytes | str, columns: Sequence[str]) -> list[dict[str, str | None]]:
    """
    Read C{-H} output into one dict per line, C{None} where the value is
    C{-} (not set).

    @raise ParseError: a line does not have one field per column.
    """
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    rows = []
    for line in text.splitlines():
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != len(columns):
            raise ParseError(f"expected {len(columns)} tab-separated fields, got: {line!r}")
        rows.append({c: (None if v == "-" else v) for c, v in zip(columns, fields)})
    return rows


def _int(row: Mapping[str, str | None], column: str) -> int:
    value = row[column]
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ParseError(f"{column} is not a number: {value!r}") from None


def _optional_int(row: Mapping[str, str | None], column: str) -> int | None:
    return None if row[column] is None else _int(row, column)


@attrs.frozen
class Volume:
    """
    A zvol.

    @ivar name: its full name, C{pool/dataset/volume}.
    @ivar size: its volsize (bytes).
    @ivar volblocksize: bytes.
    @ivar used: bytes it and its snapshots take from the pool (with any
        reservation).
    @ivar referenced: bytes of data it refers to.
    @ivar origin: the snapshot it is a clone of, or L{None}.
    @ivar created: seconds since the epoch.
    @ivar owner: its C{comet:owner} tag, or L{None}.
    """

    name: str
    size: int
    volblocksize: int
    used: int
    referenced: int
    origin: str | None
    created: int
    owner: str | None

    @property
    def short_name(self) -> str:
        """The last component of L{name}."""
        return self.name.rsplit("/", 1)[-1]

    @property
    def dataset(self) -> str:
        """The dataset it lives in."""
        return self.name.rsplit("/", 1)[0]


@attrs.frozen
class Snapshot:
    """
    A snapshot of a zvol.

    @ivar name: C{volume@snap}.
    @ivar createtxg: the transaction group it was taken in (orders snapshots).
    @ivar created: seconds since the epoch.
    @ivar used: bytes only it holds.
    @ivar referenced: bytes of data it refers to.
    """

    name: str
    createtxg: int
    created: int
    used: int
    referenced: int
    owner: str | None

    @property
    def volume(self) -> str:
        return self.name.split("@", 1)[0]

    @property
    def snapname(self) -> str:
        return self.name.split("@", 1)[1]


@attrs.frozen
class Pool:
    """A zpool; sizes in bytes; health as C{zpool} says it (C{ONLINE}, C{DEGRADED}, ...)."""

    name: str
    size: int
    allocated: int
    free: int
    health: str


@attrs.frozen
class Space:
    """Space of a dataset, in bytes."""

    used: int
    available: int
    referenced: int

    @property
    def capacity(self) -> int:
        """What the dataset could hold: what it uses plus what is still available to it."""
        return self.used + self.available


def parse_volumes(output: bytes | str) -> list[Volume]:
    """Read the output of L{list_volumes_argv} or L{get_volume_argv}."""
    return [
        Volume(
            name=row["name"] or "",
            size=_int(row, "volsize"),
            volblocksize=_int(row, "volblocksize"),
            used=_int(row, "used"),
            referenced=_int(row, "referenced"),
            origin=row["origin"],
            created=_int(row, "creation"),
            owner=row[OWNER_PROPERTY],
        )
        for row in parse_rows(output, VOLUME_COLUMNS)
    ]


def parse_snapshots(output: bytes | str) -> list[Snapshot]:
    """Read the output of L{list_snapshots_argv}, oldest first."""
    snapshots = [
        Snapshot(
            name=row["name"] or "",
            createtxg=_int(row, "createtxg"),
            created=_int(row, "creation"),
            used=_int(row, "used"),
            referenced=_int(row, "referenced"),
            owner=row[OWNER_PROPERTY],
        )
        for row in parse_rows(output, SNAPSHOT_COLUMNS)
    ]
    return sorted(snapshots, key=lambda s: (s.createtxg, s.name))


def parse_pools(output: bytes | str) -> list[Pool]:
    """Read the output of L{pool_list_argv}."""
    return [
        Pool(
            name=row["name"] or "",
            size=_int(row, "size"),
            allocated=_int(row, "allocated"),
            free=_int(row, "free"),
            health=row["health"] or "",
        )
        for row in parse_rows(output, POOL_COLUMNS)
    ]


def parse_get(output: bytes | str) -> dict[tuple[str, str], tuple[str | None, str | None]]:
    """
    Read the output of L{get_argv}: C{(name, property) -> (value, source)},
    C{None} for C{-}.
    """
    return {
        (row["name"] or "", row["property"] or ""): (row["value"], row["source"])
        for row in parse_rows(output, GET_COLUMNS)
    }


def parse_devices(output: bytes | str) -> dict[str, str]:
    """Read the output of L{devices_argv}: C{zvol name -> /dev/zdN}."""
    return {row["zvol"] or "": row["device"] or "" for row in parse_rows(output, ("device", "zvol"))}
