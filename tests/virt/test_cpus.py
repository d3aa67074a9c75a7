"""
L{comet.virt._cpus.parse_domain_capabilities}: the guest CPUs a host's
domain capabilities offer.  (Reading them from a real libvirtd, and the
cache, are in the contract suite: C{tests/contract/virt_suite.py}.)
"""

from twisted.trial.unittest import TestCase

from comet.virt import HostCpus
from comet.virt._cpus import parse_domain_capabilities

#: The C{<cpu>} part of what libvirt 9.0 answers for a TCG domain (trimmed).
TCG = """<domainCapabilities>
  <path>/usr/bin/qemu-system-x86_64</path>
  <domain>qemu</domain>
  <cpu>
    <mode name='host-passthrough' supported='no'/>
    <mode name='maximum' supported='yes'>
      <enum name='maximumMigratable'><value>on</value><value>off</value></enum>
    </mode>
    <mode name='host-model' supported='yes'>
      <model fallback='forbid'>EPYC</model>
      <feature policy='require' name='x2apic'/>
    </mode>
    <mode name='custom' supported='yes'>
      <model usable='yes' vendor='unknown'>qemu64</model>
      <model usable='yes' vendor='Intel'>Nehalem</model>
      <model usable='no' vendor='Intel'>Haswell</model>
    </mode>
  </cpu>
</domainCapabilities>"""


class ParseTests(TestCase):
    def test_supported_modes_usable_models(self):
        """Only supported modes, and only the custom mode's usable models, count."""
        self.assertEqual(parse_domain_capabilities(TCG), HostCpus(
            modes=frozenset({"maximum", "host-model", "custom"}),
            models=frozenset({"qemu64", "Nehalem"})))

    def test_custom_mode_unsupported(self):
        """A host whose custom mode is unsupported offers no named model."""
        xml = TCG.replace("<mode name='custom' supported='yes'>",
                          "<mode name='custom' supported='no'>")
        self.assertEqual(parse_domain_capabilities(xml).models, frozenset())

    def test_no_cpu_element(self):
        self.assertEqual(parse_domain_capabilities("<domainCapabilities/>"),
                         HostCpus(modes=frozenset(), models=frozenset()))
