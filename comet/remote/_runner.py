"""
Running commands on a storage server with the OpenSSH client.

One C{ssh} child process per command, started with C{reactor.spawnProcess},
so that nothing blocks the reactor and every child can be killed.  Connections
are shared through an OpenSSH ControlMaster (one socket per server in the
configured control directory, kept open C{control_persist} seconds after the
last command): the first command pays for the key exchange (about 0.3 s on the
testbed), later ones do not.

The client is told to trust nothing it was not given: batch mode (never a
prompt), strict host key checking against the configured C{known_hosts} file
only, the configured identity only, no agent, no user or system
C{ssh_config}.
"""


from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Sequence

from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from comet.config import ConfigError, DatabaseConfig, StorageConfig, StorageServerConfig
from comet.errors import Unavailable
from comet.remote._command import check_argv, describe, remote_command
from comet.remote._controldir import control_dir, ensure_private_dir, socket_name
from comet.remote._interface import IRunner
from comet.remote._observed import Observed as _Observed
from comet.remote._sshcommand import _Command, _Stream

_log = Logger()


#: Commands that only read (what a viewer's GET runs): they wait behind every
#: waiting change for a free session, so polling cannot starve a VM start.
_READS = {("zfs", "list"), ("zfs", "get"), ("zpool", "list"), ("zpool", "get"),
          ("zpool", "status")}


def is_read(argv: Sequence[str]) -> bool:
    """Whether C{argv} is one of the commands known to change nothing."""
    if tuple(argv[:2]) in _READS:
        return True
    if argv[:1] == ["tgtadm"] and "--op" in argv:
        at = argv.index("--op")
        return at + 1 < len(argv) and argv[at + 1] == "show"
    return False


@implementer(IRunner)
class SSHRunner:
    """
    Runs commands on one storage server through the OpenSSH client.

    @ivar host: the server's address.
    @ivar clock: the L{IReactorTime} timeouts are measured on.
    @ivar kill_grace: seconds between SIGTERM and SIGKILL for a child being
        killed.
    """

    def __init__(
        self,
        reactor,
        server: StorageServerConfig,
        storage: StorageConfig,
        clock: IReactorTime | None = None,
        ssh: str = "/usr/bin/ssh",
        control_persist: int = 300,
        server_alive_interval: int = 15,
        kill_grace: float = 5.0,
        remote_timeout: bool = True,
        metrics=None,
        role: str = "storage server",
    ):
        """
        @param reactor: an L{twisted.internet.interfaces.IReactorProcess}.
        @param control_persist: seconds the shared connection stays open
            after its last command.
        @param server_alive_interval: seconds between keep-alive probes; three
            unanswered probes end a connection (and its commands) as
            unavailable.
        @param remote_timeout: also run each command that has a timeout
            under the server's C{timeout -s KILL} (coreutils or busybox),
            set C{kill_grace} seconds later than the local one.  Killing the
            local ssh client does not kill the remote command (without a
            terminal nothing sends it a signal); this does.
        @param metrics: the daemon's L{comet.metrics.Metrics}: each command's
            latency is observed there as it ends (C{None}: not measured).
        @param role: what the machine is to Comet, for its errors (C{storage
            server}, or C{compute host} for a host's own commands).
        """
        self._reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.server = server
        self.storage = storage
        self.host = server.host
        self.role = role
        self.kill_grace = kill_grace
        self._remote_timeout = remote_timeout
        self._metrics = metrics
        self._ssh = ssh
        self._control_persist = control_persist
        self._alive = server_alive_interval
        self._running: set[_Command] = set()
        self._stopping: _Observed | None = None
        #: Commands waiting for a session: changes first, then reads, each in
        #: the order they came (L{_spawn}).
        self._waiting: dict[bool, deque[tuple[_Command, list[str]]]] = {
            False: deque(), True: deque()
        }
        self.max_sessions = server.max_sessions
        #: The ControlMaster sockets' directory: as configured, or (``""``)
        #: beside the default database; the daemon resolves it at start.
        self.control_dir = control_dir(storage.control_dir, DatabaseConfig().path)

    def __repr__(self):
        return f"<SSHRunner {self.server.ssh_user}@{self.host}:{self.server.ssh_port}>"

    @property
    def control_path(self) -> str:
        """
        The ControlPath given to ssh: a short hash of user, host and port (not
        ssh's C{%C}, 40 characters) so that paths fit a Unix socket address.
        """
        s = self.server
        return os.path.join(self.control_dir, socket_name(s.ssh_user, s.host, s.ssh_port))

    def ssh_argv(self, *extra: str) -> list[str]:
        """
        The ssh client's arguments up to the host name (inclusive), with
        C{extra} options placed before the host.
        """
        s = self.server
        options = [
            "BatchMode=yes",
            "StrictHostKeyChecking=yes",
            f"UserKnownHostsFile={s.ssh_known_hosts}",
            "GlobalKnownHostsFile=/dev/null",
            "IdentitiesOnly=yes",
            "IdentityAgent=none",
            f"ConnectTimeout={self.storage.connect_timeout}",
            "ControlMaster=auto",
            f"ControlPath={self.control_path}",
            f"ControlPersist={self._control_persist}",
            f"ServerAliveInterval={self._alive}",
            "ServerAliveCountMax=3",
            "LogLevel=ERROR",
        ]
        argv = [self._ssh, "-F", "/dev/null", "-T", "-i", s.ssh_identity,
                "-p", str(s.ssh_port), "-l", s.ssh_user]
        for option in options:
            argv += ["-o", option]
        return argv + list(extra) + ["--", s.host]

    # IRunner

    def run(self, argv: Sequence[str], stdin: bytes | None = None,
            timeout: float | None = None) -> Deferred:
        argv = check_argv(argv)
        if timeout is None:
            timeout = self.storage.command_timeout
        command = _Command(self, argv, stdin, timeout)
        refused = self._spawn(command, self.ssh_argv() + [self._remote(argv, timeout)])
        if refused is not None:
            return refused
        outcome = command.outcome.observe(lambda d: command.kill("cancel"))
        if self._metrics is not None:
            began = self._metrics.timer()
            outcome.addBoth(self._measured, argv[0], began)
        return outcome

    def _measured(self, result, command: str, began: float):
        """Observe a command's latency (from its start, the wait for a session included)."""
        ok = not isinstance(result, Failure)
        self._metrics.ssh_command(self.host, os.path.basename(command), ok,
                                  self._metrics.timer() - began)
        return result

    def run_stream(self, argv: Sequence[str], timeout: float | None = None,
                   output=None) -> _Stream:
        argv = check_argv(argv)
        command = _Command(self, argv, None, timeout)
        command.output = output
        command.stream = stream = _Stream(command)
        refused = self._spawn(command, self.ssh_argv() + [self._remote(argv, timeout)])
        if refused is not None:
            stream.closed = True
            refused.addErrback(command.outcome.settle)
        return stream

    def stop(self) -> Deferred:
        if self._stopping is None:
            self._stopping = _Observed()
            waits = []
            for command in [c for queue in self._waiting.values() for c, _ in queue]:
                command.kill("stop")
            for command in list(self._running):
                command.kill("stop")
                waits.append(command.outcome.observe().addErrback(lambda _: None))
            gatherResults(waits).addCallback(lambda _: self._close_master()).addBoth(
                self._stopping.settle
            )
        return self._stopping.observe()

    # Inside

    def _remote(self, argv: list[str], timeout: float | None) -> str:
        """The remote command string, under the server's own timeout if there is one."""
        if timeout is not None and self._remote_timeout:
            limit = str(math.ceil(timeout + self.kill_grace))
            argv = ["timeout", "-s", "KILL", limit] + argv
        return remote_command(argv)

    def _spawn(self, command: _Command, args: list[str]) -> Deferred | None:
        """Start C{command}'s child, or return a failed Deferred saying why not."""
        if self._stopping is not None:
            return fail(Unavailable(
                f"{self.role} {self.host} is unavailable: Comet is shutting down"
            ))
        if not os.access(self._ssh, os.X_OK):
            return fail(Unavailable(
                f"{self.role} {self.host} is unavailable: no ssh client at {self._ssh}"
            ))
        try:
            ensure_private_dir(self.control_dir)
        except ConfigError as e:
            return fail(Unavailable(f"{self.role} {self.host} is unavailable: {e}"))
        if len(self._running) >= self.max_sessions:
            _log.debug("{command} on {host} waits for a session", command=describe(command.argv),
                       host=self.host)
            self._waiting[is_read(command.argv)].append((command, args))
            return None
        self._start(command, args)
        return None

    def _start(self, command: _Command, args: list[str]) -> None:
        _log.debug("running {command} on {host}", command=describe(command.argv),
                   host=self.host)
        self._running.add(command)
        self._reactor.spawnProcess(command, self._ssh, args, env=self._environment())

    def withdraw(self, command: _Command) -> bool:
        """
        Take C{command} out of the line if it is waiting there; whether it
        was.  A command killed before it ran asks this.
        """
        for queue in self._waiting.values():
            for entry in queue:
                if entry[0] is command:
                    queue.remove(entry)
                    return True
        return False

    def _next(self) -> None:
        """Start waiting commands while sessions are free: changes before reads."""
        while len(self._running) < self.max_sessions and self._stopping is None:
            queue = self._waiting[False] or self._waiting[True]
            if not queue:
                return
            self._start(*queue.popleft())

    @property
    def in_flight(self) -> int:
        """Commands running now (each an ssh session on the shared connection)."""
        return len(self._running)

    @staticmethod
    def _environment() -> dict[str, str]:
        """The daemon's environment, less what would let ssh use an agent or X."""
        return {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "DISPLAY")}

    def ended(self, command: _Command) -> None:
        """C{command}'s child has ended (it says so): its session is free for the next."""
        self._running.discard(command)
        self._next()

    def _close_master(self) -> Deferred:
        """Ask the shared connection's master process to exit (if there is one)."""
        command = _Command(self, ["ssh", "-O", "exit"], None, self.kill_grace)
        if not os.access(self._ssh, os.X_OK):
            return None
        self._running.add(command)
        self._reactor.spawnProcess(command, self._ssh, self.ssh_argv("-O", "exit"),
                                   env=self._environment())
        return command.outcome.observe().addErrback(lambda _: None).addCallback(lambda _: None)
