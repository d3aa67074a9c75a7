"""
What guest CPUs a compute host can give (L{HostCpus}): read once per host
connection, in the libvirt pool, and kept until the connection is replaced
(a libvirtd restarted, maybe upgraded, may know other models).

Libvirt's domain capabilities (C{virConnectGetDomainCapabilities}) for the
domain type Comet defines there (C{kvm} or C{qemu}, x86_64, machine C{pc})
say which CPU modes it supports and which named models are I{usable}: the
host's CPU and the hypervisor can run them (a KVM guest needs the features
in the host CPU; TCG emulates most).  A driver without domain capabilities
(libvirt's test driver) answers with every model libvirt knows for x86_64
(C{virConnectGetCPUModelNames}) and every mode: it accepts any.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt
from twisted.internet.defer import Deferred, fail, succeed

from comet.errors import NotFound
from comet.names import HOST_MODEL, HOST_PASSTHROUGH
from comet.virt._values import HostCpus

#: The domain types whose capabilities are asked for under their own name
#: (the test driver has none: see the module's docstring).
_VIRT_TYPES = {"kvm": "kvm", "qemu": "qemu"}
_ARCH = "x86_64"
_MACHINE = "pc"


def parse_domain_capabilities(xml: str) -> HostCpus:
    """
    L{HostCpus} from C{<domainCapabilities>}: the modes whose C{supported}
    is C{yes}, and the C{custom} mode's models whose C{usable} is C{yes}.
    """
    root = ET.fromstring(xml)
    modes, models = set(), set()
    for mode in root.findall("cpu/mode"):
        if mode.get("supported") != "yes":
            continue
        modes.add(mode.get("name", ""))
        if mode.get("name") == "custom":
            models.update((m.text or "").strip() for m in mode.findall("model")
                          if m.get("usable") == "yes")
    return HostCpus(modes=frozenset(modes - {""}), models=frozenset(models - {""}))


def read_cpus(conn, host: str, domain_type: str) -> HostCpus:
    """In a pool thread: the host's L{HostCpus} for domains of C{domain_type}."""
    try:
        xml = conn.getDomainCapabilities(None, _ARCH, _MACHINE, _VIRT_TYPES.get(domain_type), 0)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
        return HostCpus(modes=frozenset({HOST_PASSTHROUGH, HOST_MODEL, "custom"}),
                        models=frozenset(conn.getCPUModelNames(_ARCH, 0)))
    return parse_domain_capabilities(xml)


class _CpuReads:
    """
    Mixed into L{comet.virt.Hypervisors}: L{cpu_models}, cached per
    connection in C{_cpu_cache} (host name -> (connection, L{HostCpus})).
    """

    _cpu_cache: dict

    def cpu_models(self, host: str) -> Deferred[HostCpus]:
        """
        The guest CPUs C{host} can give (L{HostCpus}): read on its current
        connection's first asking, answered from memory after that.
        """
        try:
            entry = self._host(host)
        except NotFound:
            return fail()
        cache = self._cpu_cache
        cached = cache.get(host)
        if cached is not None and entry.connection is not None and cached[0] is entry.connection:
            return succeed(cached[1])

        def keep(cpus: HostCpus) -> HostCpus:
            current = self._hosts.get(host)
            if current is entry and entry.connection is not None:
                cache[host] = (entry.connection, cpus)
            return cpus

        return self._call(host, f"reading the CPU models of {host!r}", read_cpus,
                          entry.config.domain_type).addCallback(keep)
