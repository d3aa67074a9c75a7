"""
A real OpenSSH server on loopback for the runner's tests: its own host key,
client key, known_hosts file and configuration in a temporary directory, on a
free port.  It runs in the foreground (C{sshd -D}) as a child of the test
process, the leader of a process group of its own (its sessions' processes
join it), ready once it accepts a connection, stopped by killing that group;
it dies with the test process too (the parent-death signal), so that a run
killed outright leaves no sshd listening.
"""

from __future__ import annotations

import atexit
import ctypes
import getpass
import os
import shutil
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


def _die_with_parent() -> None:
    """In the child before C{exec}: SIGTERM when the test process dies (Linux prctl)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def children(pid: int) -> list[int]:
    """The live (not zombie) processes whose parent is C{pid}."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(name))
    return found


def alive(pid: int) -> bool:
    """Whether process C{pid} exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


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


def started(case) -> "LocalSSHServer":
    """
    A L{LocalSSHServer} started for the test C{case} (skipped when this
    machine has no sshd), stopped and removed when it ends.
    """
    from twisted.trial.unittest import SkipTest

    why = missing()
    if why:
        raise SkipTest(why)
    server = LocalSSHServer()
    case.addCleanup(shutil.rmtree, server.directory, True)
    server.start()
    case.addCleanup(server.stop)
    return server


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

    def start(self, timeout: float = 60) -> None:
        """
        Start sshd and return once it accepts connections on its port.  (A
        daemonizing sshd binds only after its fork: its parent's exit said
        nothing, and a connection right after it was refused under load.)
        """
        os.makedirs("/run/sshd", exist_ok=True)
        self.process = subprocess.Popen(
            [SSHD, "-D", "-f", os.path.join(self.directory, "sshd_config"), "-E", self.log],
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent,
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited ({self.process.returncode}): {self._log_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"sshd did not listen within {timeout} s:"
                                       f" {self._log_text()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """
        Stop sshd (its process group, killed if TERM is not enough) and its
        sessions' processes (each made a session of its own by sshd).
        """
        atexit.unregister(self.stop)
        process = getattr(self, "process", None)
        if process is None:
            return
        sessions = children(process.pid)
        for child in sessions:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(10)
                break
            except subprocess.TimeoutExpired:
                continue
        process.wait()
        # A session's process handles its SIGTERM in its own time (CI once saw
        # one still alive just after): wait for each, then kill what is left.
        for sig, seconds in ((None, 10), (signal.SIGKILL, 5)):
            for pid in sessions if sig else ():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + seconds
            while any(alive(pid) for pid in sessions) and time.monotonic() < deadline:
                time.sleep(0.05)

    def _log_text(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return "(no log)"

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
