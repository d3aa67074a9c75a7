"""
Run by C{test_host_thaw.py} in a child process: L{comet.virt.Hypervisors} on
one host at C{URI}, calls of every kind going at once, while the libvirtd of
PID is frozen (SIGSTOP) for FREEZE seconds past a shortened keepalive and
thawed, CYCLES times.  Prints one line C{cycle N connected} each time the
host is back; a fault kills the process (faulthandler prints the threads).

    python -m tests.integration.thaw_driver URI PID FREEZE CYCLES
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import time

from twisted.internet import defer, reactor, task

from comet.config import ComputeConfig, HostConfig
from comet.virt import Hypervisors


async def main(uri: str, pid: int, freeze: float, cycles: int) -> None:
    hv = Hypervisors(reactor, (HostConfig(name="h", uri=uri, domain_type="test"),),
                     ComputeConfig(libvirt_threads=8, libvirt_timeout=2),
                     # A ping a second, 2 unanswered: the frozen host's
                     # connection is closed by libvirt within seconds, not 20.
                     keepalive=(1, 2))
    hv.startService()

    def load():
        for call in (lambda: hv.ping("h"), lambda: hv.domain_states("h"),
                     lambda: hv.list_domains("h"), lambda: hv.node_info("h"),
                     lambda: hv.domain_state("h", "test")):
            call().addErrback(lambda _: None)

    loop = task.LoopingCall(load)
    loop.start(0.05)
    await task.deferLater(reactor, 1, lambda: None)
    for cycle in range(cycles):
        os.kill(pid, signal.SIGSTOP)
        try:
            await task.deferLater(reactor, freeze, lambda: None)
        finally:
            os.kill(pid, signal.SIGCONT)
        end = time.monotonic() + 30
        while hv.status("h").state != "connected" and time.monotonic() < end:
            await task.deferLater(reactor, 0.1, lambda: None)
        # Calls go on for a while on the host that came back.
        await task.deferLater(reactor, 1, lambda: None)
        print(f"cycle {cycle} {hv.status('h').state}", flush=True)
    loop.stop()
    await hv.stopService()


def run(argv: list[str]) -> None:
    faulthandler.enable(all_threads=True)
    uri, pid, freeze, cycles = argv[0], int(argv[1]), float(argv[2]), int(argv[3])
    outcome = []
    d = defer.Deferred.fromCoroutine(main(uri, pid, freeze, cycles))
    d.addBoth(outcome.append).addBoth(lambda _: reactor.stop())
    reactor.run()
    if outcome and outcome[0] is not None:
        outcome[0].printTraceback()
        sys.exit(1)


if __name__ == "__main__":
    run(sys.argv[1:])
