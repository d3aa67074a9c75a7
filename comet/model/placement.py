"""
Placement: which compute host a VM that is starting goes to.

A pure function over what the hosts report, so that the rule is stated once and
tested without any host: among the connected hosts that fit the VM (the
networks of its NICs, its CPU model (L{comet.model.cpus}), enough free
memory, at least as many CPUs as it has vCPUs), the one with the most free
memory; ties go to the host listed first in the configuration.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import attrs

from comet.errors import Conflict
from comet.model.cpus import misfit


@attrs.frozen
class Candidate:
    """A connected host, as placement sees it."""

    name: str
    cpus: int
    #: MiB.
    memory: int
    #: MiB free for a new VM: see L{free_memory}.
    free: int
    #: The networks it can put a NIC on (L{comet.model.hosts.HostModel.networks}).
    networks: frozenset[str] = frozenset()
    #: Its C{[[hosts]] cpu_mode} ("": unset).
    cpu_mode: str = ""
    #: The guest CPUs its libvirt offers (a L{comet.virt.HostCpus}), or
    #: C{None}: not read (not needed, or the read failed).
    host_cpus: object = None


def free_memory(memory: int, kernel_free: int, committed: int) -> int:
    """
    Memory (MiB) a host can still give a VM: what its kernel reports free, but
    never more than its memory less what the VMs Comet placed there were given
    (C{committed}, running or not: a placed VM may start again at any time, and
    a guest that has not yet touched its memory does not show in the kernel's
    count).  Other domains on the host count through the kernel's figure.  A
    host that reports no kernel figure (libvirt's test driver) is judged by
    the second alone.
    """
    uncommitted = max(0, memory - committed)
    if kernel_free <= 0:
        return uncommitted
    return min(kernel_free, uncommitted)


def choose_host(candidates: Sequence[Candidate], memory: int, cpus: int,
                networks: Iterable[str] = (), cpu_model: str | None = None) -> str:
    """
    The host a VM of C{memory} MiB and C{cpus} vCPUs, with NICs on
    C{networks}, needing CPU model C{cpu_model} (or none), goes to: only
    hosts that offer every one of those networks and can run its CPU are
    considered.

    @raise Conflict: no host fits it (the reason says what each lacks).
    """
    needed = frozenset(networks)
    offering = [c for c in candidates if needed <= c.networks]
    if candidates and not offering:
        raise Conflict(
            f"no connected compute host offers the networks {', '.join(sorted(needed))}"
            f" the VM's NICs are on ({'; '.join(_offers(c) for c in candidates)})")
    candidates = offering
    misfits = {c.name: misfit(c.cpu_mode, c.host_cpus, cpu_model) for c in candidates}
    running = [c for c in candidates if misfits[c.name] is None]
    if candidates and not running:
        need = (f"CPU model {cpu_model}, which the VM needs" if cpu_model
                else "the CPU its cpu_mode gives a VM")
        raise Conflict(
            f"no connected compute host can run {need}"
            f" ({'; '.join(f'{name}: {why}' for name, why in misfits.items())})")
    candidates = running
    fitting = [c for c in candidates if c.free >= memory and c.cpus >= cpus]
    if not fitting:
        if not candidates:
            raise Conflict("no compute host is connected; the VM cannot be placed")
        why = "; ".join(
            f"{c.name}: {c.free} MB free, {c.cpus} CPUs" for c in candidates
        )
        raise Conflict(
            f"no compute host fits a VM of {memory} MB and {cpus} CPU(s) ({why})"
        )
    best = max(c.free for c in fitting)
    return next(c.name for c in fitting if c.free == best)


def _offers(candidate: Candidate) -> str:
    return f"{candidate.name}: {', '.join(sorted(candidate.networks)) or 'none'}"
