"""
The storage server as a machine: which boot it is in.

A server's boot id changes with every boot, and a boot loses all of tgt's
targets (they live in tgtd's memory only), so a boot id that changed says
"the exports of this server must be made again" even when the reboot was
too quick for anyone to see the server not answer.
"""

from __future__ import annotations

import re

from twisted.internet.defer import Deferred

from comet.remote.tgt import ParseError

#: Linux's boot id: a random UUID made at boot.
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def boot_id_argv() -> list[str]:
    return ["cat", BOOT_ID_PATH]


def parse_boot_id(output: bytes | str) -> str:
    """@raise ParseError: C{output} is not one boot id."""
    text = output.decode("ascii", "replace") if isinstance(output, bytes) else output
    text = text.strip()
    if not _UUID.match(text):
        raise ParseError(f"not a boot id: {text[:60]!r}")
    return text


def boot_id(runner, timeout: float | None = None) -> Deferred:
    """@return: L{Deferred} of the boot id of the server C{runner} reaches."""
    return runner.run(boot_id_argv(), timeout=timeout).addCallback(parse_boot_id)
