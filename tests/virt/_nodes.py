"""
Fake compute hosts for tests: libvirt test-driver nodes, one XML file each.

A C{test:///ABS/PATH.xml} URI gives an independent in-process "host" per file
(whereas every connection to C{test:///default} shares one state in the
process), so a test can have as many hosts as it likes and none of them sees
another test's domains::

    uri = make_node_xml(node_path(self), cpus=8, memory_mb=16384,
                        domains=[domain_spec("web-1"),
                                 (domain_spec("db-1"), "shutoff")])
    HostConfig(name="node-1", uri=uri, domain_type="test")

Note that each C{libvirt.open} of the same file reads it afresh: two
connections to one file are two separate nodes, and changes are never written
back to the file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid as _uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable

from comet.virt.domainxml import CometMetadata, DiskSpec, DomainSpec, domain_xml

#: The libvirt test driver's XML namespace, for C{<test:runstate>}.
TEST_NAMESPACE = "http://libvirt.org/schemas/domain/test/1.0"
ET.register_namespace("test", TEST_NAMESPACE)

#: Libvirt's C{virDomainState} numbers for the states a node file can hold.
_RUNSTATES = {"running": 1, "paused": 3, "shutoff": 5}


def node_path(case) -> str:
    """
    A fresh path for a node file, in a temporary directory removed after the
    test C{case} (not C{case.mktemp()}, which under pytest would leave
    directories in the working directory).
    """
    directory = tempfile.mkdtemp(prefix="comet-virt-")
    case.addCleanup(shutil.rmtree, directory, True)
    return os.path.join(directory, "node.xml")


def domain_spec(
    name: str,
    memory_mb: int = 256,
    cpus: int = 1,
    metadata: CometMetadata | None = None,
    disks: tuple[DiskSpec, ...] = (),
    **kwargs,
) -> DomainSpec:
    """
    A L{DomainSpec} of type C{test} with a UUID derived from its name (so a
    test can predict it).
    """
    return DomainSpec(
        name=name,
        uuid=str(_uuid.uuid5(_uuid.NAMESPACE_DNS, f"{name}.comet.test")),
        memory_mb=memory_mb,
        cpus=cpus,
        domain_type="test",
        metadata=metadata,
        disks=disks,
        **kwargs,
    )


def make_node_xml(
    path: str,
    cpus: int = 4,
    memory_mb: int = 8192,
    domains: Iterable[DomainSpec | tuple[DomainSpec, str]] = (),
    mhz: int = 2000,
) -> str:
    """
    Write a test-driver node to C{path} and return its URI.

    @param cpus: logical CPUs of the node.
    @param memory_mb: its memory, in MiB.
    @param domains: L{DomainSpec}s (of type C{test}), each alone (running, as
        the test driver starts them by default) or with its state,
        C{"running"}, C{"paused"} or C{"shutoff"}.
    @return: C{test:///}I{absolute path}.
    """
    node = ET.Element("node")
    cpu = ET.SubElement(node, "cpu")
    for tag, value in [
        ("mhz", mhz),
        ("model", "i686"),
        ("nodes", 1),
        ("sockets", 1),
        ("cores", cpus),
        ("threads", 1),
        ("active", cpus),
    ]:
        ET.SubElement(cpu, tag).text = str(value)
    ET.SubElement(node, "memory").text = str(memory_mb * 1024)
    for item in domains:
        spec, state = item if isinstance(item, tuple) else (item, "running")
        element = ET.fromstring(domain_xml(spec))
        ET.SubElement(element, f"{{{TEST_NAMESPACE}}}runstate").text = str(
            _RUNSTATES[state]
        )
        node.append(element)
    path = os.path.abspath(path)
    with open(path, "w", encoding="utf-8") as f:
        f.write(ET.tostring(node, encoding="unicode"))
    return "test://" + path


def break_node(path: str) -> str:
    """
    Make the node file at C{path} one libvirt cannot open (as if its host were
    down) and return its URI; L{make_node_xml} on the same path brings it back.
    """
    path = os.path.abspath(path)
    with open(path, "w", encoding="utf-8") as f:
        f.write("this host is down\n")
    return "test://" + path
