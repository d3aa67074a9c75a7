"""
What the libvirt adapter answers with: small frozen values, no libvirt objects
(those must never leave the libvirt threads).
"""

from __future__ import annotations

import attrs

from comet.virt.domainxml import CometMetadata

#: Domain states as Comet reports them.
RUNNING = "running"
PAUSED = "paused"
SHUTOFF = "shutoff"
#: No state, crashed and preserved, or suspended to RAM by the guest.
OTHER = "other"

#: Host states, as the C{/hosts} resource shows them.
CONNECTED = "connected"
UNREACHABLE = "unreachable"


@attrs.frozen
class NodeInfo:
    """Capacity of a compute host, read live."""

    #: Logical CPUs of the host.
    cpus: int
    #: Memory of the host, in MiB.
    memory_mb: int
    #: Memory the host's kernel reports free, in MiB.  Libvirt's test driver
    #: reports 0 for nodes read from a file.
    memory_free_mb: int
    #: Domains the host knows, running or not.
    domains: int
    #: Domains running (or paused) on the host.
    running: int


@attrs.frozen
class DomainInfo:
    """One domain in a host's list."""

    name: str
    #: L{RUNNING}, L{PAUSED}, L{SHUTOFF} or L{OTHER}.
    state: str
    #: Memory the domain is defined with, in MiB.
    memory_mb: int
    #: Virtual CPUs.
    cpus: int
    uuid: str


@attrs.frozen
class OwnedDomain:
    """A domain that carries Comet's metadata: Comet defined it."""

    name: str
    uuid: str
    state: str
    metadata: CometMetadata


@attrs.frozen
class GraphicsAddress:
    """Where a running domain's VNC display listens, on its compute host."""

    #: The address on the host (C{127.0.0.1} for every domain Comet defines).
    listen: str
    #: The TCP port.
    port: int


@attrs.frozen
class HostStatus:
    """Whether Comet can talk to a compute host right now, and if not, why."""

    name: str
    uri: str
    #: L{CONNECTED} or L{UNREACHABLE}.
    state: str
    #: Why it is unreachable; C{""} when connected.
    reason: str = ""


@attrs.frozen
class MigrationProgress:
    """
    How far a domain's migration job is (libvirt's job statistics), read on
    its source host while it runs; or, once done, on its destination.
    """

    #: Guest memory to copy, and still to copy, in bytes (0 when not known).
    memory_total: int = 0
    memory_remaining: int = 0
    #: Milliseconds since the job began.
    elapsed_ms: int = 0
    #: Milliseconds the guest was paused for its last copy (a completed
    #: job's; C{None} while running or when the driver does not say).
    downtime_ms: int | None = None

    @property
    def percent(self) -> int:
        """Memory copied, 0-100 (a page dirtied again counts again: it can go back)."""
        if self.memory_total <= 0:
            return 0
        done = self.memory_total - self.memory_remaining
        return max(0, min(100, 100 * done // self.memory_total))


@attrs.frozen
class HostCpus:
    """
    The guest CPUs a compute host's libvirt can give a domain of Comet's
    type there (L{comet.virt.Hypervisors.cpu_models}).
    """

    #: The CPU modes it supports (C{host-passthrough}, C{host-model}, C{custom}).
    modes: frozenset[str]
    #: The named CPU models a guest can have there.
    models: frozenset[str]
