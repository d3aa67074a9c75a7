"""
The directory of the ssh ControlMaster sockets, and the socket paths in it.

Whoever can write a socket where ssh looks for its master receives every
command Comet runs on a storage server (CHAP secrets among them).  The old
default, C{/tmp/comet-ssh}, could be made by any local user first.  So the
directory defaults to one beside the database (the daemon's own place), is
made 0700, and is refused (a L{ConfigError}: the daemon does not start) when
it is a symlink, is not a directory, is not the daemon's user's or is open to
others.

A Unix socket address holds 107 bytes; OpenSSH binds the master's socket as
C{<ControlPath>.<16 random characters>} before renaming it, so a path must
leave room for those 17.  Socket names are short hashes of user, host and
port (what ssh's own C{%C} hashes, in 12 characters instead of 40); a default
directory too deep for them falls back to C{/tmp/comet-ssh-<uid>-<hash of the
database's directory>}, made and checked the same way.
"""

from __future__ import annotations

import hashlib
import os
import stat

from comet.config import ConfigError

#: The longest Unix socket path (sun_path is 108 bytes, one is the NUL).
_SUN_PATH = 107
#: What OpenSSH appends to a ControlPath while it binds the master socket.
_SSH_SUFFIX = len(".") + 16
#: Length of a socket's name in the directory.
_NAME = 12
#: The longest directory the socket paths fit under.
MAX_DIR = _SUN_PATH - _SSH_SUFFIX - len("/") - _NAME


def socket_name(user: str, host: str, port: int) -> str:
    """The socket's file name for one login: short, unique per user, host and port."""
    return hashlib.sha256(f"{user}@{host}:{port}".encode()).hexdigest()[:_NAME]


def default_control_dir(database_path: str) -> str:
    """
    C{<database directory>/comet-ssh}, or when that is too long for socket
    paths, a directory of this user under C{/tmp} named for the database's
    directory (so two daemons do not share one).
    """
    base = os.path.dirname(os.path.abspath(database_path))
    beside = os.path.join(base, "comet-ssh")
    if len(beside) <= MAX_DIR:
        return beside
    digest = hashlib.sha256(base.encode()).hexdigest()[:12]
    return f"/tmp/comet-ssh-{os.geteuid()}-{digest}"


def control_dir(configured: str, database_path: str) -> str:
    """The directory to use: the configured one, or the default when it is C{""}."""
    directory = configured or default_control_dir(database_path)
    directory = os.path.abspath(directory)
    if len(directory) > MAX_DIR:
        raise ConfigError(
            f"storage.control_dir {directory!r} is too long for ssh's control sockets"
            f" (at most {MAX_DIR} characters)"
        )
    return directory


def ensure_private_dir(directory: str) -> str:
    """
    Make C{directory} (mode 0700) if absent, then check it is a real
    directory (not a symlink) owned by this process's user with mode 0700.

    @raise ConfigError: when it is not; the message says what is wrong and
        what to do.
    """
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise ConfigError(f"storage.control_dir {directory!r} cannot be made: {e.strerror}") from None
    info = os.lstat(directory)
    where = f"storage.control_dir {directory!r}"
    if stat.S_ISLNK(info.st_mode):
        raise ConfigError(f"{where} is a symlink; it must be a directory of the daemon's own")
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{where} is not a directory")
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"{where} belongs to uid {info.st_uid}, not to the daemon's user (uid {os.geteuid()});"
            " another user could receive every ssh command: remove it or choose another"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        raise ConfigError(
            f"{where} has mode {stat.S_IMODE(info.st_mode):04o}; it must be 0700"
            f" (chmod 700 {directory})"
        )
    return directory


def private_control_dir(configured: str, database_path: str) -> str:
    """
    The directory to use (L{control_dir}), made and checked
    (L{ensure_private_dir}): what the daemon does at start, so that a
    directory another user could plant sockets in stops it there.
    """
    return ensure_private_dir(control_dir(configured, database_path))
