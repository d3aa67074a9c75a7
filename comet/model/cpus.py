"""
CPU models: which CPU a VM's domain gets on a host, and whether a host can
give a VM the CPU it needs.  Stated once here; placement
(L{comet.model.placement}), migration and the start
(L{comet.model.operations.vm_start}) apply them.

A host's C{cpu_mode} (C{[[hosts]]}) is C{host-passthrough}, C{host-model},
a named model, or unset (the hypervisor's default CPU).  A VM (or its
template) may need a named model (C{cpu_model}, e.g. C{Haswell-noTSX}): it
gets exactly that model wherever it runs, so it goes only to a host that is
not dedicated to another model and whose libvirt reports the model usable.
A host with a named C{cpu_mode} is dedicated to it: every VM without a
model of its own gets that model there, and a VM that needs another one
does not go there.
"""

from __future__ import annotations

from comet.errors import InvalidInput
from comet.names import HOST_MODEL, HOST_PASSTHROUGH, check_cpu_model

#: A body without C{cpu_model}: a PUT leaves it as it is, a VM create
#: takes its template's.
NOT_GIVEN = object()


def check_cpu_model_value(model) -> str | None:
    """C{model} (a name or C{None}) as given; L{InvalidInput} unless it can name a CPU model."""
    if model is not None and not check_cpu_model(model):
        raise InvalidInput(
            f"cpu_model {model!r} is not a CPU model name (like Haswell-noTSX: letters,"
            f" digits, '_', '.', '-'; not {HOST_PASSTHROUGH} or {HOST_MODEL}, which are"
            " modes a host is configured with)")
    return model


def domain_cpu(host_mode: str, model: str | None) -> str | None:
    """
    The C{cpu} of a VM's domain (L{comet.virt.DomainSpec.cpu}) on a host of
    C{cpu_mode} C{host_mode}: the VM's own C{model} if it has one, else the
    host's mode; C{None} (the hypervisor's default) when neither says.
    """
    return model or host_mode or None


def misfit(host_mode: str, cpus, model: str | None) -> str | None:
    """
    Why a host of C{cpu_mode} C{host_mode} whose libvirt offers C{cpus} (a
    L{comet.virt.HostCpus}; C{None} when they could not be read) cannot run
    a VM that needs C{model} (C{None}: nothing in particular); C{None} when
    it can.
    """
    dedicated = host_mode not in ("", HOST_PASSTHROUGH, HOST_MODEL)
    if model is not None and dedicated and model != host_mode:
        return f"its cpu_mode is {host_mode}"
    wanted = domain_cpu(host_mode, model)
    if wanted is None:
        return None
    if cpus is None:
        return "its CPU models could not be read"
    if wanted in (HOST_PASSTHROUGH, HOST_MODEL):
        return None if wanted in cpus.modes else f"its libvirt does not support {wanted}"
    return None if wanted in cpus.models else f"its libvirt cannot run {wanted}"
