"""
The manhole: a Python prompt inside the live daemon, over SSH.

An operator who needs to see what the daemon holds (the configuration, the
database, the models, the HTTP app) logs in with an SSH key listed in the
configured C{authorized_keys} file; nothing else is accepted, and the default
endpoint is loopback only.  The file is read at each login, so adding or
removing a key needs no restart.  The server's own host key is made on first
start and kept, so clients can pin it.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch import manhole_ssh
from twisted.conch.checkers import SSHPublicKeyChecker, readAuthorizedKeyFile
from twisted.conch.manhole_tap import chainedProtocolFactory
from twisted.conch.ssh.keys import Key
from twisted.cred.portal import Portal
from twisted.logger import Logger
from zope.interface import implementer
from twisted.conch.checkers import IAuthorizedKeysDB

from comet.config import ManholeConfig

log = Logger()


@implementer(IAuthorizedKeysDB)
class AuthorizedKeysFile:
    """The keys of one OpenSSH C{authorized_keys} file, for any user name."""

    def __init__(self, path: str):
        self.path = path

    def getAuthorizedKeys(self, username):
        try:
            with open(self.path, "rb") as f:
                return list(readAuthorizedKeyFile(f, parseKey=Key.fromString))
        except OSError as e:
            log.warn("manhole: cannot read {path}: {e}", path=self.path, e=e)
            return []


def host_key(path: str) -> Key:
    """The manhole's host key at C{path}, made (Ed25519, mode 0600) if absent."""
    if not os.path.exists(path):
        key = Key(ed25519.Ed25519PrivateKey.generate())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.toString("openssh"))
        log.info("manhole: made a new host key at {path}", path=path)
    return Key.fromFile(path)


def manhole_factory(config: ManholeConfig, namespace: dict) -> manhole_ssh.ConchFactory:
    """An SSH server factory for the manhole, with C{namespace} as its locals."""
    realm = manhole_ssh.TerminalRealm()
    realm.chainedProtocolFactory = chainedProtocolFactory(namespace)
    checker = SSHPublicKeyChecker(AuthorizedKeysFile(config.authorized_keys))
    factory = manhole_ssh.ConchFactory(Portal(realm, [checker]))
    key = host_key(config.host_key)
    factory.publicKeys = {key.sshType(): key.public()}
    factory.privateKeys = {key.sshType(): key}
    return factory
