"""
The rule for every name a client chooses (clusters, VMs, templates, volumes,
snapshots, pools).

Names end up in libvirt domain names, ZFS dataset paths and iSCSI target names,
and as arguments of commands run on remote hosts.  The rule keeps out everything
a shell or a path would read specially (spaces, quotes, ``;``, ``$``, ``/``, a
leading ``-`` or ``.``), so a valid name is safe there; commands still quote it.
"""

import re

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)


def check_name(name: object) -> bool:
    """Whether C{name} is a string that follows the name rule."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


#: The network name of a cluster's own private network (L{comet.model.nics}).
PRIVATE_NETWORK = "private"
#: A Linux interface name: at most 15 bytes (IFNAMSIZ less the NUL), nothing
#: a command line or a path would read specially.
_INTERFACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
_SSH_TARGET = re.compile(r"^(?:[a-z_][a-z0-9_-]{0,31}@)?[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$")


#: The two C{[[hosts]] cpu_mode}s that are not a named CPU model: the
#: host's own CPU as it is, and libvirt's closest named model to it plus
#: its extra features (L{comet.model.cpus}).
HOST_PASSTHROUGH = "host-passthrough"
HOST_MODEL = "host-model"


def check_cpu_model(name: object) -> bool:
    """
    Whether C{name} can name a CPU model (libvirt's C{<model>}, QEMU's
    C{-cpu}): the name rule, and neither host mode.
    """
    return check_name(name) and name not in (HOST_PASSTHROUGH, HOST_MODEL)


def check_interface_name(name: object) -> bool:
    """Whether C{name} can name a Linux network interface (and is safe in argv)."""
    return isinstance(name, str) and _INTERFACE.fullmatch(name) is not None


def check_ssh_target(target: object) -> bool:
    """Whether C{target} is C{[user@]address}, with nothing ssh would read as an option."""
    return isinstance(target, str) and _SSH_TARGET.fullmatch(target) is not None
