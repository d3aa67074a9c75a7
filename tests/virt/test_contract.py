"""
The compute-host contract suite (C{tests/contract/virt_suite.py}) run against
libvirt's test driver: each host a node file of its own
(C{test:///PATH.xml}, see L{tests.virt._nodes}), the spare host's file broken
to take it down and rewritten to bring it back.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.virt import DiskSpec, DomainSpec
from tests.contract.virt_suite import VirtContractMixin
from tests.virt._nodes import break_node, domain_spec, make_node_xml, node_path


class TestDriverContractTests(VirtContractMixin, TestCase):
    """libvirt's test driver meets the contract, with its differences flagged."""

    shutdown_is_immediate = True
    live_device_changes = False
    secrets = False
    vnc_ports = False
    connection_loss_seen = False
    start_resumes = False
    poweroff_shuts_down = False
    migrates = False
    emulated_cpus = False
    #: Generous: the machine is shared and loaded, and timeouts are not what
    #: this suite is about (tests/virt/test_hypervisors.py tests them).
    call_timeout = 30.0

    def setUp(self):
        self._host_uri = make_node_xml(node_path(self))
        self._spare_path = node_path(self)
        self._spare_uri = make_node_xml(self._spare_path)
        super().setUp()

    def host_uri(self) -> str:
        return self._host_uri

    def guest(self, name: str) -> DomainSpec:
        return domain_spec(
            name, disks=(DiskSpec.file("vda", f"/nonexistent/{name}.img", "raw"),),
            vnc_password="comet", metadata=_metadata(name))

    def extra_disk(self) -> DiskSpec:
        return DiskSpec.file("vdb", "/nonexistent/extra.img", "raw")

    def spare_uri(self) -> str:
        return self._spare_uri

    def take_down(self):
        break_node(self._spare_path)

    def other_host_uri(self) -> str:
        return make_node_xml(node_path(self))

    def bring_up(self, spec: DomainSpec, state: str):
        make_node_xml(self._spare_path, domains=[(spec, state)])


def _metadata(name):
    from comet.virt import CometMetadata

    return CometMetadata("comet-test", name, "contract")
