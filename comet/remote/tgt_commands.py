"""
tgt command lines: target names (IQNs), CHAP users and passwords, and the
argument lists of every C{tgtadm} command L{comet.remote.tgt.TGT} runs.

CHAP passwords never appear on a command line that Comet's host can see (the
ssh client's arguments are visible to every local user): a constant script on
the server (L{NEW_ACCOUNT_SCRIPT}) reads the password from standard input
and hands it to C{tgtadm}.
"""

from __future__ import annotations

import datetime
import re

from comet.errors import InvalidInput
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


def check_tid(tid: object) -> str:
    """Check a target id (a positive integer); its text. @raise InvalidInput: it is not one."""
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
    return _TGTADM + ["--mode", "target", "--op", "new", "--tid", check_tid(tid),
                      "--targetname", check_iqn(name)]


def new_lun_argv(tid: int, lun: int, device: str) -> list[str]:
    """LUN C{lun} of target C{tid}, backed by block device C{device}."""
    if not isinstance(device, str) or not re.fullmatch(r"/dev/[A-Za-z0-9/_.-]+", device):
        raise InvalidInput(f"not a device path: {device!r}")
    return _TGTADM + ["--mode", "logicalunit", "--op", "new", "--tid", check_tid(tid),
                      "--lun", str(int(lun)), "--backing-store", device]


def bind_address_argv(tid: int, address: str = "ALL") -> list[str]:
    """Let initiators at C{address} (an IP address, a network, or C{ALL}) in."""
    if not isinstance(address, str) or not _ADDRESS.match(address):
        raise InvalidInput(f"not an initiator address: {address!r}")
    return _TGTADM + ["--mode", "target", "--op", "bind", "--tid", check_tid(tid),
                      "--initiator-address", address]


def unbind_address_argv(tid: int, address: str) -> list[str]:
    """Stop letting initiators at C{address} in (one entry of the target's ACL)."""
    if not isinstance(address, str) or not _ADDRESS.match(address):
        raise InvalidInput(f"not an initiator address: {address!r}")
    return _TGTADM + ["--mode", "target", "--op", "unbind", "--tid", check_tid(tid),
                      "--initiator-address", address]


def new_account_argv(user: str) -> list[str]:
    """Create CHAP account C{user}; its password goes on standard input, one line."""
    return ["sh", "-c", NEW_ACCOUNT_SCRIPT, "comet-chap", check_user(user)]


def bind_account_argv(tid: int, user: str) -> list[str]:
    return _TGTADM + ["--mode", "account", "--op", "bind", "--tid", check_tid(tid),
                      "--user", check_user(user)]


def delete_target_argv(tid: int) -> list[str]:
    """Delete target C{tid}, ending any sessions on it."""
    return _TGTADM + ["--mode", "target", "--op", "delete", "--force", "--tid", check_tid(tid)]


def delete_account_argv(user: str) -> list[str]:
    return _TGTADM + ["--mode", "account", "--op", "delete", "--user", check_user(user)]
