"""
Comet: one Twisted daemon that runs clusters of virtual machines on libvirt
compute hosts, with their disks kept as ZFS zvols on storage servers and
exported over iSCSI, behind a JSON REST API.
"""

__version__ = "0.1.0"
