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
