"""
Comet's libvirt adapter: compute hosts, their domains, and the XML for them.

L{Hypervisors} is the service that owns one libvirt connection per configured
compute host and runs every libvirt call in a thread pool of its own; its
operations answer with L{Deferred}s of the small values below and fail with
L{comet.errors} exceptions (or L{HypervisorError}).  L{domainxml} builds and
reads the domain XML.  Nothing outside this package touches C{libvirt}.
"""

from comet.virt._errors import HypervisorError
from comet.virt._eventloop import LIFECYCLE_EVENTS, ensure_event_loop
from comet.virt._hypervisors import Hypervisors
from comet.virt._statecache import CachedStates
from comet.virt._values import (
    CONNECTED,
    OTHER,
    PAUSED,
    RUNNING,
    SHUTOFF,
    UNREACHABLE,
    DomainInfo,
    GraphicsAddress,
    HostCpus,
    HostStatus,
    MigrationProgress,
    NodeInfo,
    OwnedDomain,
)
from comet.virt.domainxml import (
    CometMetadata,
    DiskSpec,
    DomainDescription,
    DomainSpec,
    NicSpec,
    disk_xml,
    domain_xml,
    secret_xml,
)
from comet.virt.domainxml_parse import parse_domain

__all__ = [
    "CONNECTED",
    "CachedStates",
    "LIFECYCLE_EVENTS",
    "OTHER",
    "PAUSED",
    "RUNNING",
    "SHUTOFF",
    "UNREACHABLE",
    "CometMetadata",
    "DiskSpec",
    "DomainDescription",
    "DomainInfo",
    "DomainSpec",
    "GraphicsAddress",
    "HostCpus",
    "HostStatus",
    "HypervisorError",
    "Hypervisors",
    "MigrationProgress",
    "NicSpec",
    "NodeInfo",
    "OwnedDomain",
    "disk_xml",
    "domain_xml",
    "ensure_event_loop",
    "parse_domain",
    "secret_xml",
]
