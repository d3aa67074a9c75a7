"""
The C{twistd comet} plugin: C{twistd -n comet [--config FILE]}.

Kept tiny on purpose: Twisted imports every plugin module to list them, so this
file imports nothing of Comet until the service is made.
"""

from twisted.application.service import ServiceMaker

Comet = ServiceMaker(
    "Comet",
    "comet.tap",
    "Clusters of libvirt VMs on ZFS zvols over iSCSI, with a JSON REST API",
    "comet",
)
