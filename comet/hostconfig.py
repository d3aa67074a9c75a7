"""
The compute hosts' configuration (C{[[hosts]]}) and the clusters' networks
(C{[network]}): read by L{comet.config}, which re-exports them.
"""

from __future__ import annotations

import ipaddress
import re

import attrs

from comet.names import (HOST_MODEL, HOST_PASSTHROUGH, PRIVATE_NETWORK, check_cpu_model,
                         check_interface_name, check_name, check_ssh_target)


def _key(key: str) -> str:
    """A key as an error message shows it: as written, unless that would break the line."""
    return key if key.isprintable() else repr(key)


@attrs.frozen
class HostConfig:
    name: str
    uri: str
    #: Libvirt domain type for VMs placed here: ``kvm`` in production,
    #: ``qemu`` (TCG) where the CPU has no virtualisation, ``test`` for the test driver.
    domain_type: str = "kvm"
    #: The address storage servers see this host's iSCSI logins come from:
    #: each export admits that initiator address only (besides CHAP).  "":
    #: derived (L{comet.model.initiators}).
    storage_address: str = ""
    #: The address other compute hosts reach this one's QEMU at when a VM
    #: migrates here (C{tcp://<address>} as libvirt's migration URI).  "":
    #: libvirt's choice (this host's hostname as it resolves it).
    migration_address: str = ""
    #: The bridges this host offers VMs' NICs, by network name
    #: (C{bridges = {public = "br0"}}): a VM with a NIC on C{public} is placed
    #: only on hosts that offer it.  C{private} is the cluster's own network
    #: and cannot be named here.
    bridges: tuple[tuple[str, str], ...] = ()
    #: The address the other hosts' VXLAN tunnels reach this host at (the
    #: clusters' private networks); "": this host carries no private network.
    tunnel_address: str = ""
    #: C{[user@]address} the daemon runs this host's network commands at
    #: (C{ip}, C{bridge}) over ssh (C{[storage]}'s timeouts and control
    #: directory); "": none (then it has no C{tunnel_address} either).
    ssh: str = ""
    ssh_port: int = 22
    ssh_identity: str = "/etc/comet/id_ed25519"
    ssh_known_hosts: str = "/etc/comet/known_hosts"
    #: The CPU the VMs started here get (L{comet.model.cpus}):
    #: C{host-passthrough}, C{host-model}, or a named model (C{Nehalem}: every
    #: VM exactly that one, and only VMs that need it or nothing).  "": the
    #: hypervisor's default (QEMU's C{qemu64}).
    cpu_mode: str = ""
    #: The ZFS dataset on this host (reached over C{ssh}) that holds the
    #: local copies of local-copy mode VMs' disks
    #: (L{comet.model.storage.localcopies}), e.g. C{tank/comet-local}; "":
    #: this host runs no local-copy mode VM.
    local_dataset: str = ""
    #: Whether a local copy synced back at its VM's stop stays in
    #: C{local_dataset} as a cache, from which the VM's next start here
    #: copies only what changed since (C{False}: it is removed).  Needs
    #: C{local_dataset}.
    local_keep: bool = False


@attrs.frozen
class NetworkConfig:
    #: The VXLAN network identifiers given to clusters' private networks,
    #: C{"FIRST-LAST"} (each cluster gets one, the first time one of its VMs
    #: has a private NIC, and keeps it).
    vni_range: str = "10000-19999"
    #: The MTU of VMs' NICs on private networks: their frames cross a VXLAN
    #: tunnel, 50 bytes larger, so 1450 on the usual 1500-byte underlay
    #: (more only if every host's tunnel path carries jumbo frames).
    mtu: int = 1450

    def vnis(self) -> range:
        first, last = (int(part) for part in self.vni_range.split("-"))
        return range(first, last + 1)


def check_network(config) -> None:
    """
    Bridges, tunnel addresses, ssh targets and the VNI range
    (L{comet.model.nics}); L{ValueError} says what is wrong, in one line.
    """
    match = re.fullmatch(r"([0-9]+)-([0-9]+)", config.network.vni_range)
    if not match or not 1 <= int(match[1]) <= int(match[2]) <= 16777215:
        raise ValueError(
            f"network.vni_range must be FIRST-LAST within 1-16777215, not"
            f" {_key(config.network.vni_range)!s}")
    for host in config.hosts:
        for network, bridge in host.bridges:
            if network == PRIVATE_NETWORK or not check_name(network):
                raise ValueError(
                    f"hosts.{host.name}.bridges: {_key(network)!s} cannot name a network")
            if not check_interface_name(bridge):
                raise ValueError(
                    f"hosts.{host.name}.bridges.{network}: {_key(bridge)!s} is not an"
                    " interface name")
        if host.tunnel_address:
            try:
                ipaddress.ip_address(host.tunnel_address)
            except ValueError:
                raise ValueError(
                    f"hosts: tunnel_address {_key(host.tunnel_address)!s} of {host.name!r}"
                    " is not an IP address") from None
        if host.ssh and not check_ssh_target(host.ssh):
            raise ValueError(f"hosts: ssh {_key(host.ssh)!s} of {host.name!r} is not user@address")
        if host.local_dataset and not check_local_dataset(host.local_dataset):
            raise ValueError(
                f"hosts: local_dataset {_key(host.local_dataset)!s} of {host.name!r} is not a"
                " ZFS dataset name like tank/comet-local")
        if host.local_keep and not host.local_dataset:
            raise ValueError(
                f"hosts: local_keep of {host.name!r} needs local_dataset (it keeps the local"
                " copies made there)")
        if bool(host.ssh) != bool(host.tunnel_address or host.local_dataset):
            raise ValueError(
                f"hosts: {host.name!r} needs ssh with tunnel_address or local_dataset,"
                " and neither without ssh")


def check_local_dataset(name: str) -> bool:
    """Whether C{name} is a dataset path Comet may make volumes under (C{pool/a/b})."""
    parts = name.split("/")
    return 2 <= len(parts) <= 8 and len(name) <= 200 and all(check_name(p) for p in parts)



def check_cpu_mode(host: HostConfig) -> None:
    """
    C{host.cpu_mode} is empty, a host mode or a CPU model name, and one its
    domain type can have: L{ValueError} says what is wrong, in one line.
    """
    mode = host.cpu_mode
    if mode and mode not in (HOST_PASSTHROUGH, HOST_MODEL) and not check_cpu_model(mode):
        raise ValueError(f"hosts: cpu_mode {_key(mode)!s} of {host.name!r} is not"
                         f" {HOST_PASSTHROUGH}, {HOST_MODEL} or a CPU model name")
    if mode == HOST_PASSTHROUGH and host.domain_type == "qemu":
        # QEMU's -cpu host needs KVM; libvirt reports the mode unsupported
        # for TCG domains.
        raise ValueError(f"hosts: cpu_mode {HOST_PASSTHROUGH} of {host.name!r} needs KVM;"
                         " its domain_type is qemu (TCG): use host-model or a CPU model")
