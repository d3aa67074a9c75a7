"""
What the tests of L{comet.model.storage} share: the libvirt adapter with
CHAP secrets and hot-plug (L{_Secrets}), and models over fake storage
servers with a base volume, a cluster and a template on it (L{_Setup}).
"""

from __future__ import annotations

from tests._api import make_client
from tests.virt._migrating import Migrations
from tests.web.test_storage import storage_models


class _Secrets(Migrations):
    """
    The libvirt adapter with CHAP secrets kept here: libvirt's test driver
    has no secrets (the integration tests use real ones); and migrations
    (L{tests.virt._migrating}).
    """

    def __init__(self, real):
        self._real = real
        self._migrations_init()
        #: (host, uuid) -> (host, usage, value)
        self.secrets: dict[tuple[str, str], tuple[str, str, str]] = {}
        #: (host, domain, dev) -> iqn of hot-plugged disks (the test driver has no hot-plug).
        self.plugged: dict[tuple[str, str, str], str] = {}
        self.fail_attach = False
        #: A guest that holds a detached disk: for this many looks at the
        #: domain (C{True}: for ever); C{None}: it lets go at once.
        self.slow_guest: int | bool | None = None
        #: (host, domain, dev) -> looks left, of disks a slow guest still holds.
        self.held: dict[tuple[str, str, str], int | bool] = {}
        #: How often the domain was looked at while a guest held a disk.
        self.described = 0
        #: (host, domain, dev) of disks of a domain's definition (a local
        #: copy's block disks) detached since it was defined: the test driver
        #: cannot detach them, so they are left out of its descriptions here.
        self.unplugged: set[tuple[str, str, str]] = set()

    async def attach_device(self, host, name, spec, live=None, config=True):
        if self.fail_attach:
            from comet.virt import HypervisorError

            raise HypervisorError("attaching a device: it failed")
        self.plugged[(host, name, spec.target)] = spec.iqn

    async def detach_device(self, host, name, spec, live=None, config=True):
        if self.plugged.pop((host, name, spec.target), None) is None:
            self.unplugged.add((host, name, spec.target))
        if self.slow_guest is not None:
            self.held[(host, name, spec.target)] = self.slow_guest

    async def describe(self, host, name, secure=False):
        """The test driver's domain, with its hot-plugged disks and those a slow guest still holds."""
        import types

        import attrs

        real = await self._real.describe(host, name, secure)
        real = attrs.evolve(real, spec=attrs.evolve(real.spec, disks=tuple(
            d for d in real.spec.disks if (host, name, d.target) not in self.unplugged)))
        held = [types.SimpleNamespace(target=key[2]) for key in self.plugged if key[:2] == (host, name)]
        for key, looks in list(self.held.items()):
            if key[:2] == (host, name):
                self.described += 1
                if looks is not True:   # a guest that lets go after some looks
                    self.held[key] = looks - 1
                    if looks <= 1:
                        del self.held[key]
                held.append(types.SimpleNamespace(target=key[2]))
        return attrs.evolve(real, spec=attrs.evolve(real.spec, disks=(*real.spec.disks, *held)))

    def __getattr__(self, name):
        return getattr(self._real, name)

    async def define(self, host, spec):
        name = getattr(spec, "name", None)   # (domain XML: nothing to forget)
        self.unplugged = {key for key in self.unplugged if key[:2] != (host, name)}
        return await self._real.define(host, spec)

    async def define_secret(self, host, uuid, usage, value):
        self.secrets[(host, uuid)] = (host, usage, value)
        return uuid

    async def undefine_secret(self, host, uuid):
        from comet.errors import NotFound

        if self.secrets.pop((host, uuid), None) is None:
            raise NotFound(f"no secret {uuid}")


async def make_base_template(testcase, client, models) -> None:
    """The volume C{base} in pool1, the cluster C{lab} and the template C{deb} on C{base}."""
    answer = await client.post("/storagepools/pool1/storagevolumes", {"name": "base", "capacity": 1})
    await models.tasks.wait(answer.json["id"])
    testcase.assertEqual((await client.post("/cluster", {"name": "lab"})).code, 201)
    answer = await client.post(
        "/templates", {"name": "deb", "memory": 128, "disk": {"pool": "pool1", "volume": "base"}})
    testcase.assertEqual(answer.code, 201, answer.body)


class _Setup:
    """Fake storage servers, a base volume, a cluster and a template using it."""

    async def setUp(self):
        self.models = storage_models(self, wrap_hypervisors=_Secrets)
        self.secrets = self.models.storage.hypervisors
        self.client = make_client(self, self.models)
        self.server = self.servers["s1"]
        await make_base_template(self, self.client, self.models)

    async def make_vm(self, name="web"):
        answer = await self.client.post("/cluster/lab/vms", {"template": "deb", "name": name})
        self.assertEqual(answer.code, 201, answer.body)
        return answer.json
