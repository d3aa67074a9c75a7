"""
Per-domain CPU, disk and network counters (C{/metrics}), read when a scrape
asks: nothing is kept between scrapes.

On QEMU one bulk C{virConnectGetAllDomainStats} of the C{cpu-total},
C{block} and C{interface} groups answers for every running domain of a host.
A driver without those groups (libvirt's test driver reports only
C{state} in bulk) costs, per running domain, its XML (the disk and
interface targets) and one C{virDomainGetCPUStats}, C{virDomainBlockStats}
per disk and C{virDomainInterfaceStats} per interface: the same figures, by
the calls that driver has.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from typing import NamedTuple

import libvirt


class DomainCounters(NamedTuple):
    """One running domain's counters since it started, summed over its disks and interfaces."""

    name: str
    cpu_ns: int
    disk_read_bytes: int
    disk_write_bytes: int
    disk_read_requests: int
    disk_write_requests: int
    net_receive_bytes: int
    net_transmit_bytes: int
    net_receive_packets: int
    net_transmit_packets: int


_GROUPS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
           | libvirt.VIR_DOMAIN_STATS_BLOCK | libvirt.VIR_DOMAIN_STATS_INTERFACE)


def domain_counters(conn, host: str) -> list[DomainCounters]:
    """Run in a pool thread: the counters of every running domain of the host."""
    result = []
    for dom, stats in conn.getAllDomainStats(
            _GROUPS, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE):
        name = sys.intern(dom.name())
        if "cpu.time" in stats:
            result.append(_from_bulk(name, stats))
            continue
        try:
            result.append(_one_by_one(name, dom))
        except libvirt.libvirtError as e:
            if e.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
                continue   # undefined or stopped since the list was made
            raise
    return result


def _sum(stats: dict, group: str, field: str) -> int:
    return sum(stats.get(f"{group}.{i}.{field}", 0) for i in range(stats.get(f"{group}.count", 0)))


def _from_bulk(name: str, stats: dict) -> DomainCounters:
    return DomainCounters(
        name, stats["cpu.time"],
        _sum(stats, "block", "rd.bytes"), _sum(stats, "block", "wr.bytes"),
        _sum(stats, "block", "rd.reqs"), _sum(stats, "block", "wr.reqs"),
        _sum(stats, "net", "rx.bytes"), _sum(stats, "net", "tx.bytes"),
        _sum(stats, "net", "rx.pkts"), _sum(stats, "net", "tx.pkts"))


def _one_by_one(name: str, dom) -> DomainCounters:
    devices = ET.fromstring(dom.XMLDesc(0)).find("devices")
    disks = [t.get("dev") for t in devices.findall("disk/target")] if devices is not None else []
    nics = ([t.get("dev") for t in devices.findall("interface/target")]
            if devices is not None else [])
    cpu = dom.getCPUStats(True)[0].get("cpu_time", 0)
    disk = [0, 0, 0, 0]   # read bytes, write bytes, read requests, write requests
    for dev in filter(None, disks):
        rd_req, rd_bytes, wr_req, wr_bytes, _ = dom.blockStats(dev)
        for i, v in enumerate((rd_bytes, wr_bytes, rd_req, wr_req)):
            disk[i] += v
    net = [0, 0, 0, 0]    # received bytes, sent bytes, received packets, sent packets
    for dev in filter(None, nics):
        rx_bytes, rx_pkts, _, _, tx_bytes, tx_pkts, _, _ = dom.interfaceStats(dev)
        for i, v in enumerate((rx_bytes, tx_bytes, rx_pkts, tx_pkts)):
            net[i] += v
    return DomainCounters(name, cpu, *disk, *net)
