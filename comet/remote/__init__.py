"""
Commands on storage servers.

L{SSHRunner} runs an argument list on one server through the OpenSSH client
(one child process per command, a shared ControlMaster connection); every
other module here speaks to a server only through the L{IRunner} it is
given, so the fakes beside the real runner (L{FakeRunner},
L{FakeStorageServer}) can stand in for it in tests.  L{comet.remote.zfs} and
L{comet.remote.tgt} build the ZFS and tgt command lines and read their
output.
"""

from comet.remote._command import remote_command
from comet.remote._interface import IRunner, IStreamingCommand
from comet.remote._runner import SSHRunner

__all__ = [
    "IRunner",
    "IStreamingCommand",
    "SSHRunner",
    "remote_command",
]
