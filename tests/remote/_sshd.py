"""
A real OpenSSH server on loopback for the runner's tests: its own host key,
client key, known_hosts file and configuration in a temporary directory, on a
free port, stopped by the PID in its own PID file.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import tempfile
import time

from comet.config import StorageConfig, StorageServerConfig

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "/usr/bin/ssh-keygen"


def missing() -> str | None:
    """Why these tests cannot run here, or L{None} when they can."""
    for path in (SSHD, SSH_KEYGEN, "/usr/bin/ssh"):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (Debian package openssh-server / openssh-client)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: str) -> str:
    """Make an ed25519 key pair at C{path}; return the public key line."""
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "comet-test", "-f", path],
        check=True, stdin=subprocess.DEVNULL,
    )
    with open(path + ".pub") as f:
        return f.read().strip()


class LocalSSHServer:
    """
    An sshd on 127.0.0.1 that accepts one generated client key for the
    current user.

    @ivar directory: where its keys, configuration, PID file and log live.
    @ivar log: the file sshd logs to (one C{Accepted publickey} line per
        authenticated connection).
    """

    def __init__(self, max_sessions: int = 64):
        # Short, because the ControlPath socket (directory + socket name)
        # must fit in a Unix socket address (108 bytes).
        self.directory = tempfile.mkdtemp(prefix="comet-sshd-", dir="/tmp")
        self.port = free_port()
        self.user = getpass.getuser()
        d = self.directory
        self.host_public = keygen(os.path.join(d, "hostkey"))
        self.client_key = os.path.join(d, "clientkey")
        client_public = keygen(self.client_key)
        with open(os.path.join(d, "authorized_keys"), "w") as f:
            f.write(client_public + "\n")
        self.known_hosts = self.write_known_hosts("known_hosts", self.host_public)
        self.pid_file = os.path.join(d, "sshd.pid")
        self.log = os.path.join(d, "sshd.log")
        self.control_dir = os.path.join(d, "ctl")
        with open(os.path.join(d, "sshd_config"), "w") as f:
            f.write(
                f"Port {self.port}\n"
                "ListenAddress 127.0.0.1\n"
                f"HostKey {d}/hostkey\n"
                f"PidFile {self.pid_file}\n"
                f"AuthorizedKeysFile {d}/authorized_keys\n"
                "PubkeyAuthentication yes\n"
                "PasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\n"
                "UsePAM no\n"
                "StrictModes no\n"
                "PermitRootLogin prohibit-password\n"
                f"MaxSessions {max_sessions}\n"
                "MaxStartups 64\n"
                "LogLevel INFO\n"
            )

    def write_known_hosts(self, name: str, public_key_line: str) -> str:
        """Write a known_hosts file naming this server with C{public_key_line}."""
        kind, key = public_key_line.split()[:2]
        path = os.path.join(self.directory, name)
        with open(path, "w") as f:
            f.write(f"[127.0.0.1]:{self.port} {kind} {key}\n")
        return path

    def start(self) -> None:
        """Start sshd; it listens once this returns (it binds before forking)."""
        os.makedirs("/run/sshd", exist_ok=True)
        subprocess.run(
            [SSHD, "-f", os.path.join(self.directory, "sshd_config"), "-E", self.log],
            check=True, stdin=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        """Stop sshd by the PID in its PID file (its sessions end with it)."""
        # sshd writes the file just after it forks: wait until it holds a PID.
        deadline = time.monotonic() + 10
        while True:
            try:
                with open(self.pid_file) as f:
                    pid = int(f.read().strip())
                break
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sshd wrote no PID to {self.pid_file}") from None
                time.sleep(0.01)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def accepted(self) -> int:
        """How many connections sshd has authenticated so far."""
        try:
            with open(self.log) as f:
                return f.read().count("Accepted publickey")
        except OSError:
            return 0

    def server_config(self, **changes) -> StorageServerConfig:
        """The storage-server configuration that reaches this sshd."""
        values = dict(
            host="127.0.0.1", ssh_user=self.user, ssh_port=self.port,
            ssh_identity=self.client_key, ssh_known_hosts=self.known_hosts,
        )
        values.update(changes)
        return StorageServerConfig(**values)

    def storage_config(self, **changes) -> StorageConfig:
        values = dict(connect_timeout=30, command_timeout=60.0, control_dir=self.control_dir)
        values.update(changes)
        return StorageConfig(**values)
