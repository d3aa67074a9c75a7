"""
Cross-site request forgery, attempted by a real browser: headless Chromium
(Debian's C{chromium}) holds an admin's credentials for the daemon (sent
with every request it makes, as a browser that signed in to the console
with Basic does) and opens a page of another origin, which submits forms
and C{fetch}es to the daemon's actions.  Nothing changes.

The daemon's API runs in this process on a loopback port, over libvirt's
test driver (no testbed needed); the page is served from another port.
Skipped, saying why, when Chromium is missing.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from comet.web import CometAPI
from comet.web._site import api_site
from tests._api import APIClient, make_models
from tests.integration._browser import CHROMIUM, start_chromium

#: The attacker's page: forms (text/plain, form-encoded, multipart, all
#: without a body of JSON) and fetches (no-cors, and one that asks for the
#: JSON type, which needs a preflight) to the daemon's actions.
ATTACK = """<!doctype html>
<html><body>
<iframe name="a"></iframe><iframe name="b"></iframe><iframe name="c"></iframe>
<form id="plain" method="POST" enctype="text/plain" target="a" action="{vm}/poweroff">
  <input name='{{"force": true, "x": "' value='"}}'></form>
<form id="urlencoded" method="POST" target="b" action="{vm}/poweroff"></form>
<form id="multipart" method="POST" enctype="multipart/form-data" target="c"
  action="{cluster}/stop"><input name="force" value="true"></form>
<script>
  document.getElementById("plain").submit();
  document.getElementById("urlencoded").submit();
  document.getElementById("multipart").submit();
  const sent = [
    fetch("{vm}/poweroff", {{method: "POST", mode: "no-cors", credentials: "include"}}),
    fetch("{vm}/poweroff", {{method: "POST", mode: "no-cors", credentials: "include",
                            headers: {{"Content-Type": "text/plain"}}, body: "{{}}"}}),
    fetch("{cluster}", {{method: "DELETE", credentials: "include",
                        headers: {{"Content-Type": "application/json"}}, body: "{{\\"force\\": true}}"}}),
  ];
  Promise.allSettled(sent).then(() => {{ document.body.dataset.done = "yes"; }});
</script>
</body></html>
"""


class _Recording:
    """What reached the daemon: (method, path, status, whether it had credentials)."""

    def __init__(self, site: Site):
        self.seen: list[tuple[str, str, int, bool]] = []
        site.log = self.log

    def log(self, request) -> None:
        self.seen.append((
            request.method.decode(), request.path.decode(), request.code,
            request.getHeader(b"authorization") is not None,
        ))


class CrossSiteTests(TestCase):
    timeout = 180

    async def setUp(self):
        if CHROMIUM is None:
            raise SkipTest("chromium is not installed (apt-get install chromium)")
        self.models = make_models(self)
        self.client = APIClient(CometAPI(self.models))
        for method, path, body in [
            ("POST", "/templates", {"name": "tiny", "memory": 128, "cpus": 1}),
            ("POST", "/cluster", {"name": "lab"}),
            ("POST", "/cluster/lab/vms", {"template": "tiny", "name": "web"}),
            ("POST", "/cluster/lab/vms/web/start", {}),
        ]:
            answer = await self.client.request(method, path, body)
            self.assertIn(answer.code, (200, 201), answer.body)
        site = api_site(CometAPI(self.models).resource(), 1024 * 1024)
        self.recording = _Recording(site)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.daemon = f"http://127.0.0.1:{port.getHost().port}"
        self.browser = await start_chromium(self)
        await self.browser.call("Network.enable")
        await self.browser.call(
            "Network.setExtraHTTPHeaders", headers={"Authorization": self.client.authorization}
        )

    def serve_attack(self, host: str) -> str:
        """The attacker's page on another loopback port; its URL as C{host} names it."""
        page = ATTACK.format(vm=f"{self.daemon}/cluster/lab/vms/web", cluster=f"{self.daemon}/cluster/lab")
        root = Resource()
        root.putChild(b"attack.html", Data(page.encode(), "text/html; charset=utf-8"))
        port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://{host}:{port.getHost().port}/attack.html"

    async def attack(self, url: str) -> None:
        await self.browser.call("Page.navigate", url=url)
        for _ in range(300):
            posts = [s for s in self.recording.seen if s[0] == "POST"]
            done = await self.browser.evaluate("document.body ? document.body.dataset.done : null")
            if done == "yes" and len(posts) >= 5:
                break
            await deferLater(reactor, 0.1, lambda: None)
        else:
            self.fail(f"the attack did not reach the daemon: {self.recording.seen}")
        # Let anything still in flight land.
        await deferLater(reactor, 0.5, lambda: None)

    async def assertUnchanged(self):
        vm = (await self.client.get("/cluster/lab/vms/web")).json
        self.assertEqual(vm["state"], "running")
        cluster = await self.client.get("/cluster/lab")
        self.assertEqual((cluster.code, cluster.json["state"]), (200, "running"))
        posts = [s for s in self.recording.seen if s[0] in ("POST", "DELETE")]
        # The forms and fetches did reach the daemon, with the user's credentials, and were refused.
        self.assertGreaterEqual(len(posts), 5, self.recording.seen)
        self.assertTrue(all(has_credentials for *_, has_credentials in posts), posts)
        self.assertEqual({code for _, _, code, _ in posts} - {403, 415}, set(), posts)

    async def test_other_site(self):
        """A page of another host name (localhost, not 127.0.0.1) powers nothing off."""
        await self.attack(self.serve_attack("localhost"))
        await self.assertUnchanged()

    async def test_other_port_same_host(self):
        """A page of another port of the same host (the same I{site}) powers nothing off either."""
        await self.attack(self.serve_attack("127.0.0.1"))
        await self.assertUnchanged()

    async def test_the_action_works_for_the_user(self):
        """The same action, sent as Comet's clients send it, does power the VM off (the control)."""
        answer = await self.client.post("/cluster/lab/vms/web/poweroff", {})
        self.assertEqual(answer.code, 200, answer.body)
        self.assertEqual((await self.client.get("/cluster/lab/vms/web")).json["state"], "shutoff")
