"""
NIC hot-plug for tests on libvirt's test driver, which has none
(C{virDomainAttachDeviceFlags} and C{virDomainDetachDeviceFlags} are
C{VIR_ERR_NO_SUPPORT} there): L{NicHotplug} keeps the NICs plugged into and
unplugged from each domain, and L{describe} shows the domain's NICs with
them, as the live XML of a QEMU domain does after the same calls.  Disks
and everything else go to the wrapped adapter.  The hot-plug itself is
proven on QEMU (tests/integration/test_private_network.py).
"""

from __future__ import annotations

import attrs

from comet.errors import NotFound
from comet.virt import NicSpec


class NicHotplug:
    """
    A wrapper of the libvirt adapter (the real L{comet.virt.Hypervisors},
    or another wrapper of it).

    @ivar plugged: C{(host, domain)} -> the NICs plugged in since it was
        defined.
    @ivar unplugged: C{(host, domain)} -> MACs of its defined NICs unplugged.
    @ivar guest_holds: a guest that never lets an unplugged NIC go (one
        without an OS): the detach is answered, the NIC stays.
    @ivar fail: a reason every NIC hot-plug fails with.
    """

    def __init__(self, real):
        self._real = real
        self.plugged: dict[tuple[str, str], list[NicSpec]] = {}
        self.unplugged: dict[tuple[str, str], set[str]] = {}
        self.guest_holds = False
        self.fail: Exception | None = None

    def __getattr__(self, name):
        return getattr(self._real, name)

    def _forget(self, host: str, name: str) -> None:
        self.plugged.pop((host, name), None)
        self.unplugged.pop((host, name), None)

    async def define(self, host, domain):
        name = getattr(domain, "name", None)
        result = await self._real.define(host, domain)
        if name is not None:
            self._forget(host, name)
        return result

    async def undefine(self, host, name):
        await self._real.undefine(host, name)
        self._forget(host, name)

    async def attach_device(self, host, name, device, live=None, config=True):
        if not isinstance(device, NicSpec):
            return await self._real.attach_device(host, name, device, live, config)
        await self._real.domain_state(host, name)    # NotFound for no such domain
        if self.fail is not None:
            raise self.fail
        if device.mac in [n.mac for n in (await self.describe(host, name)).spec.nics]:
            from comet.virt import HypervisorError

            raise HypervisorError(f"domain {name!r} already has a NIC {device.mac}")
        self.plugged.setdefault((host, name), []).append(device)

    async def detach_device(self, host, name, device, live=None, config=True):
        if not isinstance(device, NicSpec):
            return await self._real.detach_device(host, name, device, live, config)
        if device.mac not in [n.mac for n in (await self.describe(host, name)).spec.nics]:
            raise NotFound(f"domain {name!r} on compute host {host!r} does not have that device")
        if self.guest_holds:
            return    # libvirt answers after 5 s; the guest keeps it
        plugged = self.plugged.get((host, name), [])
        if device.mac in [n.mac for n in plugged]:
            plugged[:] = [n for n in plugged if n.mac != device.mac]
        else:
            self.unplugged.setdefault((host, name), set()).add(device.mac)

    async def describe(self, host, name, secure=False):
        real = await self._real.describe(host, name, secure)
        gone = self.unplugged.get((host, name), set())
        nics = [n for n in real.spec.nics if n.mac not in gone]
        nics += self.plugged.get((host, name), [])
        return attrs.evolve(real, spec=attrs.evolve(real.spec, nics=tuple(nics)))
