"""
Libvirt XML for what Comet defines: domains, their disks, iSCSI CHAP secrets.

Everything here is built with L{xml.etree.ElementTree}, never by pasting strings
together, so a name or a path can never change the structure of the document.
The values going in are frozen C{attrs} objects (L{DomainSpec}, L{DiskSpec},
L{CometMetadata}); L{comet.virt.domainxml_parse}, which imports this module
(not the other way round), reads back what Comet needs from the XML a host
reports (disks, ownership, the VNC port), so that the reconciler can find every
domain Comet defined, by its C{<metadata>}, and leave all others alone.

Sizes here are in MiB ("MB" in the API, as the seed says for VM memory).
"""

from __future__ import annotations

import re
import uuid as _uuid
import xml.etree.ElementTree as ET

import attrs

from comet.errors import InvalidInput
from comet.names import HOST_MODEL, HOST_PASSTHROUGH, check_cpu_model

#: The XML namespace of Comet's C{<metadata>} element.
METADATA_NAMESPACE = "https://comet.example/ns/1"
#: The prefix Comet's metadata element carries in domain XML.
METADATA_PREFIX = "comet"

ET.register_namespace(METADATA_PREFIX, METADATA_NAMESPACE)

_VM_TAG = f"{{{METADATA_NAMESPACE}}}vm"

#: Domain types Comet knows how to describe.  C{kvm} and C{qemu} (TCG) get an
#: x86_64 C{pc} machine; C{test} gets what libvirt's test driver accepts.
DOMAIN_TYPES = frozenset({"kvm", "qemu", "test"})

#: VNC authentication only looks at the first 8 characters of a password.
VNC_PASSWORD_MAX = 8

_TARGET = re.compile(r"^(vd|sd|hd)[a-z]{1,2}$")
# Libvirt accepts almost any domain name; Comet refuses what would be awkward
# in file names, logs and shell commands on the host.
_DOMAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+:-]{0,199}$")
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")


def _canonical_uuid(value: str) -> str:
    try:
        return str(_uuid.UUID(str(value)))
    except ValueError:
        raise InvalidInput(f"{value!r} is not a UUID") from None


def _check_password(password: str | None) -> None:
    """A VNC password is 1 to 8 printable ASCII characters, or absent."""
    if password is None:
        return
    if (
        not isinstance(password, str)
        or not 1 <= len(password) <= VNC_PASSWORD_MAX
        or not _PRINTABLE.match(password)
    ):
        raise InvalidInput(
            f"a VNC password is 1 to {VNC_PASSWORD_MAX} printable ASCII characters"
        )


def check_vnc_password(password: str) -> None:
    """
    Raise L{InvalidInput} unless C{password} can be a VNC password: 1 to
    L{VNC_PASSWORD_MAX} printable ASCII characters without spaces (VNC's DES
    challenge ignores everything after the 8th character, so longer ones would
    only look safer than they are).
    """
    if password is None:
        raise InvalidInput("a VNC password is needed")
    _check_password(password)


@attrs.frozen
class CometMetadata:
    """
    Comet's mark on a domain it defined: which VM of which cluster it is, and
    which operation (an intent row) defined it.  Domains without this mark are
    not Comet's and are never touched.
    """

    cluster: str
    vm: str
    #: The id of the operation that defined the domain; C{""} when none.
    op: str = ""


@attrs.frozen
class DiskSpec:
    """
    One disk of a domain: a local file (unit tests, images copied to the host),
    a block device of the host (a local-copy mode VM's zvol on the host's own
    ZFS) or an iSCSI LUN reached by QEMU's own initiator (libiscsi),
    optionally with CHAP credentials kept in a libvirt secret.

    Use L{DiskSpec.file}, L{DiskSpec.block} and L{DiskSpec.iscsi} rather than
    the constructor.
    """

    #: The device name in the guest: C{vda}, C{vdb}, ...
    target: str
    #: C{"file"}, C{"block"} or C{"network"} (iSCSI).
    type: str
    #: File disks: the image's path on the compute host; block disks: the device's.
    path: str | None = None
    #: File disks: the image format (C{raw} or C{qcow2}).  iSCSI LUNs are raw.
    format: str = "raw"
    #: iSCSI disks: the target's IQN.
    iqn: str | None = None
    #: iSCSI disks: the LUN number inside the target (tgt's first data LUN is 1).
    lun: int = 1
    #: iSCSI disks: the portal address and TCP port.
    portal: str | None = None
    port: int = 3260
    #: iSCSI disks: the CHAP user name, and the usage name of the libvirt
    #: secret that holds its password (see L{secret_xml}).
    username: str | None = None
    secret_usage: str | None = None
    #: The bus the guest sees the disk on.
    bus: str = "virtio"
    #: C{disk}, or C{cdrom}: a read-only CD-ROM (a first-boot seed).
    device: str = "disk"

    def __attrs_post_init__(self) -> None:
        if not _TARGET.match(self.target or ""):
            raise InvalidInput(f"{self.target!r} is not a disk device name like vda")
        if self.device not in ("disk", "cdrom"):
            raise InvalidInput(f"disk device {self.device!r} is not disk or cdrom")
        if self.type == "file":
            if not self.path or not self.path.startswith("/"):
                raise InvalidInput("a file disk needs an absolute path")
            if self.format not in ("raw", "qcow2"):
                raise InvalidInput(f"disk format {self.format!r} is not raw or qcow2")
        elif self.type == "block":
            if not self.path or not self.path.startswith("/dev/") or ".." in self.path:
                raise InvalidInput("a block disk needs a device path under /dev")
        elif self.type == "network":
            if not self.iqn or not self.iqn.startswith("iqn.") or "/" in self.iqn:
                raise InvalidInput(f"{self.iqn!r} is not an iSCSI target name")
            if not self.portal:
                raise InvalidInput("an iSCSI disk needs a portal address")
            if not 0 <= self.lun < 16384 or not 0 < self.port < 65536:
                raise InvalidInput("iSCSI LUN or port out of range")
            if (self.username is None) != (self.secret_usage is None):
                raise InvalidInput("CHAP needs both a user name and a secret usage")
        else:
            raise InvalidInput(f"disk type {self.type!r} is not file, block or network")

    @classmethod
    def file(cls, target: str, path: str, format: str = "raw") -> DiskSpec:
        """A disk backed by the image file at C{path} on the compute host."""
        return cls(target=target, type="file", path=path, format=format)

    @classmethod
    def block(cls, target: str, path: str, cdrom: bool = False) -> DiskSpec:
        """
        A disk that is the compute host's block device C{path} (raw); with
        C{cdrom}, a read-only CD-ROM on the IDE bus (C{target} C{hd?}).
        """
        if cdrom:
            return cls(target=target, type="block", path=path, bus="ide", device="cdrom")
        return cls(target=target, type="block", path=path)

    @classmethod
    def iscsi(
        cls,
        target: str,
        iqn: str,
        portal: str,
        lun: int = 1,
        port: int = 3260,
        username: str | None = None,
        secret_usage: str | None = None,
        cdrom: bool = False,
    ) -> DiskSpec:
        """
        A disk that is LUN C{lun} of the iSCSI target C{iqn} at C{portal}; with
        C{cdrom}, a read-only CD-ROM on the IDE bus (C{target} C{hd?}).
        """
        if cdrom:
            return cls(target=target, type="network", iqn=iqn, lun=lun, portal=portal,
                       port=port, username=username, secret_usage=secret_usage,
                       bus="ide", device="cdrom")
        return cls(
            target=target,
            type="network",
            iqn=iqn,
            lun=lun,
            portal=portal,
            port=port,
            username=username,
            secret_usage=secret_usage,
        )


def _disks(value) -> tuple[DiskSpec, ...]:
    return tuple(value)


_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_BRIDGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")


@attrs.frozen
class NicSpec:
    """
    One NIC of a domain: a virtio-net device on a Linux bridge of the host
    (C{<interface type='bridge'>}), with a fixed MAC so the guest sees the
    same NIC after every start and migration.  C{mtu}, when given, is told
    to the guest (virtio-net's host MTU, which the guest's driver takes as
    its interface's) and set on the tap: a NIC on a VXLAN network must be
    smaller than the underlay's by the tunnel's 50 bytes, or full-size frames
    are dropped at the tunnel, silently.
    """

    mac: str
    bridge: str
    mtu: int | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.mac, str) or not _MAC.match(self.mac):
            raise InvalidInput(f"{self.mac!r} is not a lower-case MAC address")
        if not isinstance(self.bridge, str) or not _BRIDGE.match(self.bridge):
            raise InvalidInput(f"{self.bridge!r} is not a bridge name")
        if self.mtu is not None and (type(self.mtu) is not int or not 68 <= self.mtu <= 65535):
            raise InvalidInput(f"{self.mtu!r} is not an MTU (68-65535)")


def _nics(value) -> tuple[NicSpec, ...]:
    return tuple(value)


@attrs.frozen
class DomainSpec:
    """
    Everything Comet decides about a domain.  L{domain_xml} turns it into the
    XML given to C{virDomainDefineXML}.
    """

    name: str
    uuid: str = attrs.field(converter=_canonical_uuid)
    #: Memory, in MiB.
    memory_mb: int = 256
    #: Virtual CPUs.
    cpus: int = 1
    #: The guest's CPU: C{host-passthrough}, C{host-model}, a named model
    #: (exactly that one, never a fallback), or C{None}: the hypervisor's
    #: default (QEMU's C{qemu64}).
    cpu: str | None = None
    #: C{kvm}, C{qemu} (TCG) or C{test} (the host's configured type).
    domain_type: str = "kvm"
    disks: tuple[DiskSpec, ...] = attrs.field(default=(), converter=_disks)
    #: Its NICs, in the order the guest numbers them.
    nics: tuple[NicSpec, ...] = attrs.field(default=(), converter=_nics)
    #: A VNC display on 127.0.0.1 of the host, port chosen by libvirt.
    graphics: bool = True
    #: The VNC password; C{None} for none (the console proxy sets one live).
    vnc_password: str | None = None
    #: A serial console on a pty.
    serial: bool = True
    metadata: CometMetadata | None = None
    #: Direct kernel boot (paths on the host); without a kernel, boot from disk.
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not _DOMAIN_NAME.match(self.name):
            raise InvalidInput(f"{self.name!r} cannot be a domain name")
        if self.domain_type not in DOMAIN_TYPES:
            raise InvalidInput(
                f"domain type {self.domain_type!r} is not one of {sorted(DOMAIN_TYPES)}"
            )
        if not isinstance(self.memory_mb, int) or self.memory_mb < 1:
            raise InvalidInput("memory must be a positive number of MB")
        if not isinstance(self.cpus, int) or self.cpus < 1:
            raise InvalidInput("cpus must be a positive number")
        if self.cpu not in (None, HOST_PASSTHROUGH, HOST_MODEL) and not check_cpu_model(self.cpu):
            raise InvalidInput(f"{self.cpu!r} is not a CPU mode or model name")
        targets = [d.target for d in self.disks]
        if len(set(targets)) != len(targets):
            raise InvalidInput(f"two disks share a device name: {targets}")
        macs = [n.mac for n in self.nics]
        if len(set(macs)) != len(macs):
            raise InvalidInput(f"two NICs share a MAC: {macs}")
        _check_password(self.vnc_password)
        if self.vnc_password is not None and not self.graphics:
            raise InvalidInput("a VNC password needs graphics")
        if (self.initrd or self.cmdline) and not self.kernel:
            raise InvalidInput("an initrd or a kernel command line needs a kernel")


@attrs.frozen
class DomainDescription:
    """
    What L{parse_domain} reads from a domain's XML: the L{DomainSpec} Comet
    would have written for it, and the live facts only the host knows.
    """

    spec: DomainSpec
    #: The VNC port on the host, or C{None} when the domain is not running or
    #: has no VNC display.
    vnc_port: int | None
    #: The address the VNC display listens on (on the host), or C{None}.
    vnc_listen: str | None
    #: Whether the XML describes a running domain (it has an C{id}).
    active: bool


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attributes) -> ET.Element:
    element = ET.SubElement(parent, tag, {k: str(v) for k, v in attributes.items()})
    if text is not None:
        element.text = text
    return element


def _tostring(element: ET.Element) -> str:
    ET.indent(element)
    return ET.tostring(element, encoding="unicode")


def _disk_element(disk: DiskSpec) -> ET.Element:
    element = ET.Element("disk", {"type": disk.type, "device": disk.device})
    if disk.type == "file":
        _sub(element, "driver", name="qemu", type=disk.format)
        _sub(element, "source", file=disk.path)
    elif disk.type == "block":
        # cache='none', as for iSCSI: what the guest flushed is on the zvol,
        # so the snapshot a stop syncs back from holds it.
        _sub(element, "driver", name="qemu", type="raw", cache="none", io="native")
        _sub(element, "source", dev=disk.path)
    else:
        # cache='none': writes reach the storage server before QEMU reports them
        # done, so a snapshot taken there after a flush sees them.
        _sub(element, "driver", name="qemu", type="raw", cache="none")
        source = _sub(element, "source", protocol="iscsi", name=f"{disk.iqn}/{disk.lun}")
        _sub(source, "host", name=disk.portal, port=disk.port)
        if disk.username is not None:
            auth = _sub(element, "auth", username=disk.username)
            _sub(auth, "secret", type="iscsi", usage=disk.secret_usage)
    _sub(element, "target", dev=disk.target, bus=disk.bus)
    if disk.device == "cdrom":
        _sub(element, "readonly")
    return element


def _nic_element(nic: NicSpec) -> ET.Element:
    element = ET.Element("interface", {"type": "bridge"})
    _sub(element, "mac", address=nic.mac)
    _sub(element, "source", bridge=nic.bridge)
    _sub(element, "model", type="virtio")
    if nic.mtu is not None:
        _sub(element, "mtu", size=str(nic.mtu))
    return element


def _cpu_element(cpu: str) -> ET.Element:
    """C{<cpu>} for L{DomainSpec.cpu}: a host mode, or exactly the named model."""
    if cpu in (HOST_PASSTHROUGH, HOST_MODEL):
        return ET.Element("cpu", {"mode": cpu})
    element = ET.Element("cpu", {"mode": "custom", "match": "exact"})
    _sub(element, "model", cpu, fallback="forbid")
    return element


def _metadata_element(metadata: CometMetadata) -> ET.Element:
    return ET.Element(
        _VM_TAG, {"cluster": metadata.cluster, "vm": metadata.vm, "op": metadata.op}
    )


def disk_xml(disk: DiskSpec) -> str:
    """The C{<disk>} element for C{disk}, for hot-plug (C{attachDeviceFlags})."""
    return _tostring(_disk_element(disk))


def nic_xml(nic: NicSpec) -> str:
    """
    The C{<interface>} element for C{nic}, for hot-plug and hot-unplug
    (C{attachDeviceFlags}, C{detachDeviceFlags}: libvirt finds the NIC to
    detach by its MAC).
    """
    return _tostring(_nic_element(nic))


def device_xml(device: DiskSpec | NicSpec | str) -> str:
    """The device XML of a L{DiskSpec} or L{NicSpec} (device XML is kept as it is)."""
    if isinstance(device, DiskSpec):
        return disk_xml(device)
    if isinstance(device, NicSpec):
        return nic_xml(device)
    return device


def metadata_xml(metadata: CometMetadata) -> str:
    """
    The body of Comet's metadata element, as C{virDomainSetMetadata} wants it
    (libvirt puts it in L{METADATA_NAMESPACE} under the given prefix itself).
    """
    element = ET.Element(
        "vm", {"cluster": metadata.cluster, "vm": metadata.vm, "op": metadata.op}
    )
    return ET.tostring(element, encoding="unicode")


def domain_xml(spec: DomainSpec) -> str:
    """
    The libvirt domain XML for C{spec}.

    Powering off destroys the domain (C{on_poweroff}), a reboot restarts it, a
    crash destroys it: a Comet VM that stops is shut off, never left half-there.
    C{<acpi/>} is what lets C{shutdown} reach the guest as a power-button press.
    """
    domain = ET.Element("domain", {"type": spec.domain_type})
    _sub(domain, "name", spec.name)
    _sub(domain, "uuid", spec.uuid)
    if spec.metadata is not None:
        _sub(domain, "metadata").append(_metadata_element(spec.metadata))
    _sub(domain, "memory", str(spec.memory_mb), unit="MiB")
    _sub(domain, "currentMemory", str(spec.memory_mb), unit="MiB")
    _sub(domain, "vcpu", str(spec.cpus), placement="static")
    os = _sub(domain, "os")
    if spec.domain_type == "test":
        _sub(os, "type", "hvm")
    else:
        _sub(os, "type", "hvm", arch="x86_64", machine="pc")
    if spec.kernel:
        _sub(os, "kernel", spec.kernel)
        if spec.initrd:
            _sub(os, "initrd", spec.initrd)
        if spec.cmdline:
            _sub(os, "cmdline", spec.cmdline)
    else:
        _sub(os, "boot", dev="hd")
    features = _sub(domain, "features")
    _sub(features, "acpi")
    if spec.domain_type != "test":
        _sub(features, "apic")
    if spec.cpu is not None:
        domain.append(_cpu_element(spec.cpu))
    _sub(domain, "clock", offset="utc")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")
    devices = _sub(domain, "devices")
    for disk in spec.disks:
        devices.append(_disk_element(disk))
    for nic in spec.nics:
        devices.append(_nic_element(nic))
    if spec.serial:
        serial = _sub(devices, "serial", type="pty")
        _sub(serial, "target", port="0")
        console = _sub(devices, "console", type="pty")
        _sub(console, "target", type="serial", port="0")
    if spec.graphics:
        attributes = {"port": "-1", "autoport": "yes", "listen": "127.0.0.1"}
        if spec.vnc_password is not None:
            attributes["passwd"] = spec.vnc_password
        graphics = _sub(devices, "graphics", type="vnc", **attributes)
        _sub(graphics, "listen", type="address", address="127.0.0.1")
        if spec.domain_type != "test":
            video = _sub(devices, "video")
            _sub(video, "model", type="vga")
    return _tostring(domain)


def secret_xml(uuid: str, usage: str, description: str | None = None) -> str:
    """
    A persistent, private libvirt secret for iSCSI CHAP: C{usage} is the name
    a disk's C{<auth><secret usage=…/>} refers to.  Its value is set apart,
    with C{virSecretSetValue}, so it never appears in any XML.
    """
    secret = ET.Element("secret", {"ephemeral": "no", "private": "yes"})
    _sub(secret, "uuid", _canonical_uuid(uuid))
    if description:
        _sub(secret, "description", description)
    usage_element = _sub(secret, "usage", type="iscsi")
    _sub(usage_element, "target", usage)
    return _tostring(secret)
