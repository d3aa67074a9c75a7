"""
Commands on storage servers.

L{SSHRunner} runs an argument list on one server through the OpenSSH client
(one child process per command, a shared ControlMaster connection); every
other module here speaks to a server only through the L{IRunner} it is
given, so the fakes beside the real runner (L{FakeRunner},
L{FakeStorageServer}) can stand in for it in tests.  L{comet.remote.zfs} and
L{comet.remote.tgt} build the ZFS and tgt command lines and read their
output.

In tests, stand a fake server in for the real one::

    server = FakeStorageServer()              # pool "tank" with dataset "tank/comet"
    runner = FakeRunner(server, host="10.200.0.21")
    volumes = ZFS(runner)                     # comet.remote.zfs.ZFS
    targets = TGT(runner)                     # comet.remote.tgt.TGT
    runner.ran                                # every argv asked for, in order
    runner.unavailable = "Connection refused" # the server stops answering
    runner.answer(argv, code=1, stderr="...") # one command answers otherwise
    server.reimport()                         # zvol minors change
    server.connect(iqn, initiator, address)   # an initiator logs in
    server.synced                             # how many times sync ran

The fake answers the same commands as the real servers, in the same formats;
C{tests/contract/remote_suite.py} holds it to that.
"""

from comet.remote._command import check_argv, remote_command
from comet.remote._controldir import private_control_dir
from comet.remote._fake import Answer, Call, FakeRunner, FakeStream
from comet.remote._interface import IRunner, IStreamingCommand
from comet.remote._runner import SSHRunner

__all__ = [
    "Answer",
    "Call",
    "FakeRunner",
    "FakeStorageServer",
    "FakeStream",
    "IRunner",
    "IStreamingCommand",
    "SSHRunner",
    "check_argv",
    "private_control_dir",
    "remote_command",
]


def __getattr__(name):
    # The fake server imports zfs and tgt, which import this package: load it
    # on first use so that "import comet.remote" stays cycle-free.
    if name == "FakeStorageServer":
        from comet.remote._fakeserver import FakeStorageServer

        return FakeStorageServer
    raise AttributeError(name)
