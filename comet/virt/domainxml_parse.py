"""
Libvirt XML read back: what Comet needs from the XML a host reports for a
domain (L{parse_domain}: its spec, disks, ownership, the VNC port) or from a
domain's C{<metadata>} element (L{parse_metadata}).  The building of that
XML is L{comet.virt.domainxml}, which re-exports these.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from comet.errors import InvalidInput
from comet.names import check_name
from comet.virt.domainxml import (
    _VM_TAG,
    CometMetadata,
    DiskSpec,
    DomainDescription,
    DomainSpec,
    NicSpec,
)

#: A zvol's block device (C{/dev/zd16}) or its udev link (C{/dev/zvol/tank/v}).
_ZVOL_DEVICE = re.compile(r"^/dev/(zd[0-9]+|zvol/[A-Za-z0-9_.:/-]+)$")


_UNITS = {
    "b": 1,
    "bytes": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}


def _mib(element: ET.Element | None) -> int:
    """A libvirt size element (default unit KiB) in whole MiB."""
    if element is None or not (element.text or "").strip():
        return 0
    unit = _UNITS.get(element.get("unit", "KiB").lower())
    if unit is None:
        raise InvalidInput(f"unknown memory unit {element.get('unit')!r}")
    return int(element.text.strip()) * unit // 1024**2


def _parse_metadata(element: ET.Element | None) -> CometMetadata | None:
    if element is None:
        return None
    return CometMetadata(
        cluster=element.get("cluster", ""),
        vm=element.get("vm", ""),
        op=element.get("op", ""),
    )


def parse_metadata(xml: str) -> CometMetadata:
    """
    Comet's metadata element as C{virDomainGetMetadata} returns it (the
    element alone, in whatever prefix).
    """
    try:
        element = ET.fromstring(xml)
    except ET.ParseError as e:
        raise InvalidInput(f"metadata is not XML: {e}") from None
    return _parse_metadata(element)


def _parse_disk(element: ET.Element) -> DiskSpec | None:
    """A disk Comet could have written, or C{None} for any other kind."""
    target = element.find("target")
    source = element.find("source")
    device = element.get("device", "disk")
    if device not in ("disk", "cdrom") or target is None or source is None:
        return None
    driver = element.find("driver")
    bus = target.get("bus", "virtio")
    # (Comet's CD-ROMs are iSCSI seeds: a file CD-ROM is someone else's.)
    if element.get("type") == "file" and source.get("file") and device == "disk":
        return DiskSpec(
            target=target.get("dev"),
            type="file",
            path=source.get("file"),
            format=driver.get("type", "raw") if driver is not None else "raw",
            bus=bus,
        )
    # (Comet's block disks are zvols, local copies: another device is someone else's.)
    if element.get("type") == "block" and _ZVOL_DEVICE.match(source.get("dev") or "") \
            and device == "disk":
        return DiskSpec(target=target.get("dev"), type="block", path=source.get("dev"), bus=bus)
    if element.get("type") == "network" and source.get("protocol") == "iscsi":
        iqn, _, lun = source.get("name", "").rpartition("/")
        host = source.find("host")
        auth = element.find("auth")
        secret = auth.find("secret") if auth is not None else None
        return DiskSpec(
            target=target.get("dev"),
            type="network",
            iqn=iqn,
            lun=int(lun or 0),
            portal=host.get("name") if host is not None else None,
            port=int(host.get("port", 3260)) if host is not None else 3260,
            username=auth.get("username") if auth is not None else None,
            secret_usage=secret.get("usage") if secret is not None else None,
            bus=bus,
            device=device,
        )
    return None


def _parse_nic(element: ET.Element) -> NicSpec | None:
    """A NIC Comet could have written (on a bridge, with a MAC), or C{None}."""
    mac = element.find("mac")
    source = element.find("source")
    if element.get("type") != "bridge" or mac is None or source is None:
        return None
    mtu = element.find("mtu")
    size = mtu.get("size", "") if mtu is not None else ""
    return NicSpec(mac=mac.get("address", "").lower(), bridge=source.get("bridge", ""),
                   mtu=int(size) if size.isdigit() else None)


def _parse_cpu(element: ET.Element | None) -> str | None:
    """
    L{DomainSpec.cpu} from C{<cpu>}: its host mode, or its model's name (a
    running domain of mode C{host-model} shows the model libvirt chose);
    C{None} for none, or for a name Comet would not have written.
    """
    if element is None:
        return None
    mode = element.get("mode", "custom")
    cpu = mode if mode != "custom" else (element.findtext("model") or "").strip()
    return cpu if check_name(cpu) else None


def parse_domain(xml: str) -> DomainDescription:
    """
    Read a domain's XML (as C{virDomainGetXMLDesc} gives it, or as
    L{domain_xml} wrote it) back into a L{DomainDescription}.

    Disks Comet does not write (CD-ROMs, block devices, other protocols) are
    left out of C{spec.disks}.  The VNC password is only there when the XML
    was asked for with C{VIR_DOMAIN_XML_SECURE}.

    @raise InvalidInput: when C{xml} is not a domain Comet can describe.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise InvalidInput(f"domain XML does not parse: {e}") from None
    if root.tag != "domain":
        raise InvalidInput(f"expected a <domain>, not <{root.tag}>")
    os = root.find("os")
    kernel = initrd = cmdline = None
    if os is not None:
        kernel = os.findtext("kernel") or None
        initrd = os.findtext("initrd") or None
        cmdline = os.findtext("cmdline") or None
    devices = root.find("devices")
    if devices is None:
        devices = ET.Element("devices")
    disks = tuple(
        disk
        for disk in (_parse_disk(element) for element in devices.findall("disk"))
        if disk is not None
    )
    vnc = next(
        (g for g in devices.findall("graphics") if g.get("type") == "vnc"), None
    )
    vnc_port = vnc_listen = None
    if vnc is not None:
        port = int(vnc.get("port", "-1"))
        vnc_port = port if port > 0 else None
        listen = vnc.find("listen")
        vnc_listen = vnc.get("listen") or (
            listen.get("address") if listen is not None else None
        )
    metadata = root.find("metadata")
    spec = DomainSpec(
        name=root.findtext("name", ""),
        uuid=root.findtext("uuid", ""),
        memory_mb=_mib(root.find("memory")),
        cpus=int(root.findtext("vcpu", "0").strip() or 0),
        cpu=_parse_cpu(root.find("cpu")),
        domain_type=root.get("type", ""),
        disks=disks,
        nics=tuple(
            nic
            for nic in (_parse_nic(element) for element in devices.findall("interface"))
            if nic is not None
        ),
        graphics=vnc is not None,
        vnc_password=vnc.get("passwd") if vnc is not None else None,
        serial=devices.find("serial") is not None,
        metadata=_parse_metadata(
            metadata.find(_VM_TAG) if metadata is not None else None
        ),
        kernel=kernel,
        initrd=initrd,
        cmdline=cmdline,
    )
    return DomainDescription(
        spec=spec,
        vnc_port=vnc_port if root.get("id") else None,
        vnc_listen=vnc_listen,
        active=root.get("id") is not None,
    )
