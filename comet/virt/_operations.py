"""
The libvirt calls behind each operation of L{comet.virt.Hypervisors} (but
the display's: screenshots and VNC are in L{comet.virt._display}).

Every function here blocks, takes an open C{virConnect} and the host's name
(for messages), and runs in a libvirt thread, never in the reactor thread.
They raise C{libvirtError} for the caller to translate (see
L{comet.virt._errors.translate}) or a Comet error directly when they refuse
before asking libvirt (a state check, a bad argument).

State checks happen here, in the same thread as the call they guard, so that
every driver refuses the same way: libvirt's QEMU driver says
C{VIR_ERR_OPERATION_INVALID} where its test driver says "internal error".

Each state-changing action answers with the domain's state read right after
it, in the same call: what the action left the domain in, known without
waiting for libvirt's lifecycle event (see L{comet.virt._statecache}).
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections.abc import Collection

import libvirt

from comet.errors import Conflict, InvalidInput, NotFound
from comet.virt import domainxml, domainxml_parse
from comet.virt._values import (
    OTHER,
    PAUSED,
    RUNNING,
    SHUTOFF,
    DomainInfo,
    MigrationProgress,
    NodeInfo,
    OwnedDomain,
)

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: OTHER,
    libvirt.VIR_DOMAIN_RUNNING: RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PAUSED,
    # Being shut down: still running until the guest has finished.
    libvirt.VIR_DOMAIN_SHUTDOWN: RUNNING,
    libvirt.VIR_DOMAIN_SHUTOFF: SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: OTHER,
    libvirt.VIR_DOMAIN_PMSUSPENDED: OTHER,
}

#: Stats groups asked for in one bulk call when listing domains.
LIST_STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
)

_UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
)
# Drivers that refuse some flags (the test driver knows only the first two).
_UNDEFINE_FALLBACKS = (
    _UNDEFINE_FLAGS,
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA,
    0,
)


def state_name(state: int) -> str:
    """Comet's name for libvirt's C{virDomainState} C{state}."""
    return _STATES.get(state, OTHER)


def _unsupported_flags(error: libvirt.libvirtError) -> bool:
    return error.get_error_code() in (
        libvirt.VIR_ERR_INVALID_ARG,
        libvirt.VIR_ERR_NO_SUPPORT,
    )


def _lookup(conn, host: str, name: str):
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise NotFound(
                f"domain {name!r} is not defined on compute host {host!r}"
            ) from None
        raise


def _state(dom) -> str:
    return state_name(dom.state()[0])


def _require(dom, host: str, action: str, allowed: Collection[str]) -> str:
    """
    The state of C{dom}, after checking that C{action} is valid in it.

    @raise Conflict: naming the state, when it is not one of C{allowed}.
    """
    state = _state(dom)
    if state not in allowed:
        raise Conflict(
            f"domain {dom.name()!r} on compute host {host!r} is {state};"
            f" {action} needs it {' or '.join(sorted(allowed))}"
        )
    return state


_ACTIVE = (RUNNING, PAUSED, OTHER)


def node_info(conn, host: str) -> NodeInfo:
    """Capacity and domain counts: four calls, whatever the number of domains."""
    info = conn.getInfo()
    free = conn.getFreeMemory()
    running = conn.numOfDomains()
    inactive = conn.numOfDefinedDomains()
    return NodeInfo(
        cpus=info[2],
        memory_mb=info[1],
        memory_free_mb=free // (1024 * 1024),
        domains=running + inactive,
        running=running,
    )


def list_domains(conn, host: str) -> dict[str, DomainInfo]:
    """
    Every domain of the host, from one bulk C{virConnectGetAllDomainStats}.

    QEMU reports memory and vCPUs in the C{balloon} and C{vcpu} groups, running
    or not, so a host of any size costs one round trip.  Drivers without those
    groups (the test driver reports only C{state}) cost one C{virDomainGetInfo}
    per domain: never one call per domain per field.
    """
    result = {}
    for dom, stats in conn.getAllDomainStats(LIST_STATS, 0):
        memory = stats.get("balloon.maximum")
        cpus = stats.get("vcpu.current", stats.get("vcpu.maximum"))
        state = stats.get("state.state")
        if memory is None or cpus is None or state is None:
            try:
                state, memory, _, cpus, _ = dom.info()
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue  # undefined since the list was made
                raise
        name = dom.name()
        result[name] = DomainInfo(
            name=name,
            state=state_name(state),
            memory_mb=memory // 1024,
            cpus=cpus,
            uuid=dom.UUIDString(),
        )
    return result


def domain_states(conn, host: str) -> dict[str, str]:
    """
    The state of every domain of the host, by name, from one bulk
    C{virConnectGetAllDomainStats} of the C{state} group alone (which every
    driver reports): what a list of VMs needs, without the per-domain
    C{virDomainGetInfo} or value objects of L{list_domains}.
    """
    # Interned: the model's own copies of these names (comet.model.vms._named)
    # are then the same strings, not 10,000 more (~1 MB).
    return {
        sys.intern(dom.name()): state_name(stats["state.state"])
        for dom, stats in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)
    }


def domains_with_metadata(conn, host: str) -> dict[str, OwnedDomain]:
    """
    The domains that carry Comet's metadata, by name.  Libvirt has no bulk
    call for metadata: one bulk call for the states, then one
    C{virDomainGetMetadata} per domain.
    """
    result = {}
    for dom, stats in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0):
        try:
            text = dom.metadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT, domainxml.METADATA_NAMESPACE, 0
            )
        except libvirt.libvirtError as e:
            if e.get_error_code() in (
                libvirt.VIR_ERR_NO_DOMAIN_METADATA,
                libvirt.VIR_ERR_NO_DOMAIN,
            ):
                continue
            raise
        try:
            metadata = domainxml_parse.parse_metadata(text)
        except InvalidInput:
            continue
        name = dom.name()
        result[name] = OwnedDomain(
            name=name,
            uuid=dom.UUIDString(),
            state=state_name(stats.get("state.state", libvirt.VIR_DOMAIN_NOSTATE)),
            metadata=metadata,
        )
    return result


def ping(conn, host: str) -> None:
    """One cheap round trip to the host (the remote driver asks libvirtd)."""
    conn.getLibVersion()


def domain_state(conn, host: str, name: str) -> str:
    return _state(_lookup(conn, host, name))


def describe(conn, host: str, name: str, secure: bool = False):
    """The domain's live XML, read into a L{domainxml.DomainDescription}."""
    dom = _lookup(conn, host, name)
    flags = libvirt.VIR_DOMAIN_XML_SECURE if secure else 0
    return domainxml_parse.parse_domain(dom.XMLDesc(flags))


def _name_and_uuid(xml: str) -> tuple[str, str | None]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise InvalidInput(f"domain XML does not parse: {e}") from None
    name = root.findtext("name")
    if root.tag != "domain" or not name:
        raise InvalidInput("domain XML needs a <domain> with a <name>")
    return name, root.findtext("uuid")


def define(conn, host: str, xml: str) -> str:
    """
    Define (or redefine, same name and UUID) a persistent domain; its UUID.

    Redefining a running domain changes its configuration for its next start.

    @raise Conflict: when another domain has the name or the UUID.
    """
    name, uuid = _name_and_uuid(xml)
    try:
        existing = conn.lookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
    else:
        if uuid is None or existing.UUIDString() != uuid.lower():
            raise Conflict(
                f"compute host {host!r} already has a domain named {name!r}"
                f" (UUID {existing.UUIDString()})"
            )
    if uuid is not None:
        try:
            other = conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
        else:
            if other.name() != name:
                raise Conflict(
                    f"compute host {host!r} already has UUID {uuid}"
                    f" as domain {other.name()!r}"
                )
    try:
        dom = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    except libvirt.libvirtError as e:
        if not _unsupported_flags(e):
            raise
        dom = conn.defineXML(xml)
    return dom.UUIDString()


def start(conn, host: str, name: str) -> str:
    dom = _lookup(conn, host, name)
    _require(dom, host, "start", (SHUTOFF,))
    dom.create()
    return _state(dom)


def shutdown(conn, host: str, name: str) -> str:
    """
    Ask the guest to power off (ACPI power button); returns at once, with the
    state then: C{running} on QEMU (the guest is still shutting down),
    C{shutoff} where the driver powers off at once (the test driver).
    """
    dom = _lookup(conn, host, name)
    _require(dom, host, "shutdown", (RUNNING,))
    dom.shutdown()
    return _state(dom)


def destroy(conn, host: str, name: str) -> str:
    """Power off at once, like pulling the plug."""
    dom = _lookup(conn, host, name)
    _require(dom, host, "poweroff", _ACTIVE)
    dom.destroy()
    return _state(dom)


def reset(conn, host: str, name: str) -> str:
    dom = _lookup(conn, host, name)
    _require(dom, host, "reset", (RUNNING, PAUSED))
    dom.reset(0)
    return _state(dom)


def suspend(conn, host: str, name: str) -> str:
    dom = _lookup(conn, host, name)
    _require(dom, host, "suspend", (RUNNING,))
    dom.suspend()
    return _state(dom)


def resume(conn, host: str, name: str) -> str:
    dom = _lookup(conn, host, name)
    _require(dom, host, "resume", (PAUSED,))
    dom.resume()
    return _state(dom)


def undefine(conn, host: str, name: str) -> None:
    """
    Remove a shut-off domain's definition, with its managed save image,
    snapshot and checkpoint metadata and NVRAM file: nothing of it is left on
    the host.  (The disks are Comet's to remove.)

    @raise Conflict: when the domain is running: libvirt would make it a
        transient domain, which Comet never wants.
    """
    dom = _lookup(conn, host, name)
    _require(dom, host, "undefine", (SHUTOFF,))
    for flags in _UNDEFINE_FALLBACKS:
        try:
            dom.undefineFlags(flags)
            return
        except libvirt.libvirtError as e:
            if not flags or not _unsupported_flags(e):
                raise


#: A live migration: the guest runs on while its memory is copied, its
#: definition moves with it (defined on the destination, undefined here).
MIGRATE_FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
)


def migrate(conn, host: str, name: str, dconn, dest: str, max_downtime_ms: int,
            address: str) -> str:
    """
    Live-migrate running or paused domain C{name} to C{dconn} (host C{dest})
    with C{virDomainMigrate3}: this process drives it over both connections
    (libvirt's managed direct migration), QEMU copies the memory host to
    host.  A paused guest stays paused there.  Returns once the guest runs
    on C{dest} (its state there), or raises with the guest still here.

    @param max_downtime_ms: the longest pause for the last copy.
    @param address: where C{dest}'s QEMU is reached (C{""}: libvirt's choice).
    """
    dom = _lookup(conn, host, name)
    state = _require(dom, host, "migrate", (RUNNING, PAUSED))
    try:
        dom.migrateSetMaxDowntime(max_downtime_ms, 0)
    except libvirt.libvirtError as e:
        if not _unsupported_flags(e):
            raise
    params = {}
    if address:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = f"tcp://{address}"
    flags = MIGRATE_FLAGS | (libvirt.VIR_MIGRATE_PAUSED if state == PAUSED else 0)
    moved = dom.migrate3(dconn, params, flags)
    return _state(moved)


def migration_progress(conn, host: str, name: str, completed: bool = False):
    """
    The domain's migration job (C{completed}: its last finished one), or
    C{None} when it has none.
    """
    dom = _lookup(conn, host, name)
    flags = libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED if completed else 0
    stats = dom.jobStats(flags)
    if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
        return None
    return MigrationProgress(
        memory_total=int(stats.get("memory_total", 0)),
        memory_remaining=int(stats.get("memory_remaining", 0)),
        elapsed_ms=int(stats.get("time_elapsed", 0)),
        downtime_ms=int(stats["downtime"]) if "downtime" in stats else None,
    )


def abort_migration(conn, host: str, name: str) -> bool:
    """Cancel the domain's migration job; whether it had one."""
    dom = _lookup(conn, host, name)
    try:
        dom.abortJob()
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
            return False  # no job (finished, or never began)
        raise
    return True


def _device_flags(dom, live: bool | None, config: bool) -> int:
    if live is None:
        live = bool(dom.isActive())
    flags = (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0) | (
        libvirt.VIR_DOMAIN_AFFECT_CONFIG if config else 0
    )
    if not flags:
        raise InvalidInput("a device change must affect the live domain, its config, or both")
    return flags


def attach_device(
    conn, host: str, name: str, xml: str, live: bool | None, config: bool
) -> None:
    dom = _lookup(conn, host, name)
    dom.attachDeviceFlags(xml, _device_flags(dom, live, config))


def detach_device(
    conn, host: str, name: str, xml: str, live: bool | None, config: bool
) -> None:
    """
    @raise NotFound: the domain does not have the device (libvirt's
        C{VIR_ERR_DEVICE_MISSING}): a detach that has nothing to do, e.g. the
        reconciler undoing an attach killed before its device was attached.
    """
    dom = _lookup(conn, host, name)
    try:
        dom.detachDeviceFlags(xml, _device_flags(dom, live, config))
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_DEVICE_MISSING:
            raise NotFound(f"domain {name!r} on compute host {host!r} does not have that"
                           f" device: {e.get_error_message()}") from None
        raise


def set_metadata(conn, host: str, name: str, metadata) -> None:
    """Replace (or, with C{None}, remove) Comet's metadata on a domain."""
    dom = _lookup(conn, host, name)
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if dom.isActive():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    dom.setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT,
        domainxml.metadata_xml(metadata) if metadata is not None else None,
        domainxml.METADATA_PREFIX if metadata is not None else None,
        domainxml.METADATA_NAMESPACE,
        flags,
    )


def define_secret(conn, host: str, uuid: str, usage: str, value: bytes) -> str:
    """
    Define a private libvirt secret for iSCSI CHAP and set its value; its
    UUID.  If the value cannot be set, the secret is removed again.
    """
    secret = conn.secretDefineXML(domainxml.secret_xml(uuid, usage), 0)
    try:
        secret.setValue(value, 0)
    except BaseException:
        try:
            secret.undefine()
        except libvirt.libvirtError:
            pass
        raise
    return secret.UUIDString()


def undefine_secret(conn, host: str, uuid: str) -> None:
    try:
        secret = conn.secretLookupByUUIDString(uuid)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_SECRET:
            raise NotFound(f"secret {uuid} is not defined on compute host {host!r}") from None
        raise
    secret.undefine()
