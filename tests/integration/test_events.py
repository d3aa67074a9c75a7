"""
C{GET /events} against a real daemon and real QEMU (issue 19): on each
C{vm.state} event of a VM, a read of the VM at once gives the state the
event says.

QEMU's C{resumed} reaches Comet while libvirt's C{virDomainCreate} is still
in flight, so the state cache weighs it only when Comet's own start
answers; the event used to be told before that, and a client redrawing on
it (C{comet vm list --watch}) was given the state from before the start
until the next event.  A diskless VM (firmware only) is all it needs.
"""

from __future__ import annotations

import json

from twisted.internet.defer import ensureDeferred

from tests._sse import open_stream
from tests.integration._daemon import CometDaemonCase


class EventReadsTests(CometDaemonCase):
    timeout = 300

    async def test_read_on_each_event(self):
        template, cluster = await self.diskless_cluster()
        href = (await self.make_vm(cluster, template))["href"]
        stream = await open_stream(self, self.port, self.api_token, f"?resource={href}")

        def states(p):
            return [m["data"]["state"] for m in p.messages() if m["event"] == "vm.state"]

        for action, state in (("start", "running"), ("suspend", "paused"),
                              ("resume", "running"), ("poweroff", "shutoff")):
            told = len(states(stream))
            acting = ensureDeferred(self.request("POST", f"{href}/{action}", {}))
            await stream.until(lambda p: state in states(p)[told:], timeout=120)
            shown = await self.get(href)
            self.assertEqual(shown["state"], state,
                             (action, states(stream)[told:], json.dumps(shown)))
            answer = await acting
            self.assertEqual(answer.code, 200, answer)
