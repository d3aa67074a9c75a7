"""
Virtual machines: C{/cluster/:cluster/vms}, C{/cluster/:cluster/vms/:name},
their actions, screenshot and console; and the cluster actions C{start} and
C{stop}, which act on every VM of a cluster.
"""

from __future__ import annotations

import json

from comet.model.cpus import NOT_GIVEN
from comet.model.nics import nic_views
from comet.model.provision import (HOSTNAME_PATTERN, MAX_SSH_KEY, MAX_SSH_KEYS, MAX_USER_DATA,
                                   SSH_KEY_PATTERN)
from comet.model.vms import VM, VM_ACTIONS
from comet.store import VMRecord
from comet.web._listing import EncodedListing
from comet.web._schemas import (BOOL, COUNT, NAME, STRING, TIME, URI, actions, enum, listing,
                                nullable, obj, resource)
from comet.web._serve import ENCODER
from comet.web._table import OPERATOR, Response, Routes
from comet.web.paths import PATHS
from comet.web.tasks import TASK, task_response
from comet.web.templates import CPU_MODEL, CPUS, DISK_MODE, MEMORY

#: The endpoints this module declares (each app serves them: L{comet.web.routes}).
routes = Routes()


#: The body of C{stop}: seconds to wait for the guest, and whether to power off after.
STOP = obj(timeout={"type": "number", "minimum": 0, "maximum": 3600}, force=BOOL)

#: What a VM's C{state} can be: its domain's state, C{shutoff} when it is
#: placed nowhere, C{unknown} while its host does not answer.
STATES = ("running", "paused", "shutoff", "other", "unknown")

#: A unicast MAC (the first octet's lowest bit clear).
MAC = {"type": "string", "pattern": "^[0-9A-Fa-f][02468AaCcEe](:[0-9A-Fa-f]{2}){5}$"}
#: The NICs a new VM is given (by default its template's).
NICS = {"type": "array", "maxItems": 8, "items": obj(("network",), network=NAME, mac=MAC)}
#: A VM's NIC as shown: its bridge on the VM's host and the guest's name for it.
NIC = obj(("network", "mac", "bridge", "device"), network=NAME, mac=MAC,
          bridge=nullable(STRING), device=STRING)
#: The first-boot provisioning a VM create may carry (L{comet.model.provision}).
#: (At most 4 UTF-8 bytes a character: the model's bound in bytes holds.)
USER_DATA = {"type": "string", "maxLength": MAX_USER_DATA // 4, "pattern": "^[^\\x00]*$"}
SSH_KEYS = {"type": "array", "maxItems": MAX_SSH_KEYS,
            "items": {"type": "string", "maxLength": MAX_SSH_KEY, "pattern": SSH_KEY_PATTERN}}
HOSTNAME = {"type": "string", "maxLength": 253, "pattern": HOSTNAME_PATTERN}
#: What a VM's seed says, as shown: of user_data only its size and SHA-256.
PROVISION = resource(
    "VMProvision", hostname=STRING, ssh_keys=listing(STRING),
    user_data_bytes=nullable(COUNT), user_data_sha256=nullable(STRING),
)

SUMMARY = resource("VMSummary", name=NAME, state=enum(*STATES), host=nullable(STRING), href=URI)
VM_SCHEMA = resource(
    "VM",
    name=NAME,
    state=enum(*STATES),
    memory=MEMORY,
    cpus=CPUS,
    screenshot=nullable(URI),
    host=nullable(STRING),
    template=nullable(NAME),
    uuid={"type": "string", "pattern": "^[0-9a-f-]{36}$"},
    console=nullable(URI),
    storages=nullable(URI),
    snapshots=nullable(URI),
    nics={"type": "array", "items": NIC},
    cpu_model=nullable(CPU_MODEL),
    disk_mode=DISK_MODE,
    created=TIME,
    provision=nullable(PROVISION),
    href=URI,
    actions=actions(*VM_ACTIONS),
)


def href(vm: VM) -> str:
    return PATHS.href("vm", cluster=vm.record.cluster, name=vm.name)


def summary(vm: VM) -> dict:
    return {"name": vm.name, "state": vm.state, "host": vm.record.host, "href": href(vm)}


def representation(vm: VM) -> dict:
    r = vm.record
    running = vm.phase in ("running", "paused")
    return {
        "name": r.name,
        "state": vm.state,
        "memory": r.memory,
        "cpus": r.cpus,
        "screenshot": PATHS.href("vm.screenshot", cluster=r.cluster, name=r.name) if running else None,
        "host": r.host,
        "template": r.template,
        "uuid": r.uuid,
        "console": PATHS.href("vm.console", cluster=r.cluster, name=r.name),
        "storages": PATHS.href("vm.storages", cluster=r.cluster, name=r.name),
        "snapshots": PATHS.href("vm.snapshots", cluster=r.cluster, name=r.name),
        "nics": nic_views(r, dict(vm.host_bridges)),
        "cpu_model": r.cpu_model,
        "disk_mode": r.disk_mode,
        "created": r.created,
        "provision": json.loads(r.provision) if r.provision else None,
        "href": href(vm),
        "actions": PATHS.actions("vm", vm.actions, cluster=r.cluster, name=r.name),
    }


def _summary_of(record: VMRecord, state: str) -> dict:
    """L{summary} of the VM with C{record} in C{state} (as the API shows it)."""
    return {
        "name": record.name,
        "state": state,
        "host": record.host,
        "href": PATHS.href("vm", cluster=record.cluster, name=record.name),
    }


#: Each listed VM's summary as JSON text, kept while its record and state are
#: the same objects or equal (L{comet.web._listing}): a list of 10,000
#: unchanged VMs joins kept text.  Shared by every app of the process: an
#: entry depends on nothing but its record and state.
_LISTED = EncodedListing(ENCODER.encode, _summary_of)


@routes.route("GET", "vms", answers={200: listing(SUMMARY)})
async def list_vms(models, request, body, cluster):
    """List a cluster's VMs with their live states."""
    shown = await models.vms.shown_states(cluster)
    return Response(encoded=_LISTED.body(cluster, shown, _uuid))


def _uuid(shown: tuple[VMRecord, str]) -> str:
    return shown[0].uuid


@routes.route(
    "POST", "vms", obj(("template",), template=NAME, name=NAME, memory=MEMORY, cpus=CPUS,
                       nics=NICS, user_data=USER_DATA, ssh_keys=SSH_KEYS,
                       hostname=HOSTNAME, cpu_model=nullable(CPU_MODEL),
                       disk_mode=DISK_MODE),
    answers={201: VM_SCHEMA}, errors=(409, 502, 503),
)
async def create_vm(models, request, body, cluster):
    """
    Create a VM from a template (without a name: the template's name and a
    number; without nics: the template's NICs, MACs derived from its uuid).  With
    C{user_data}, C{ssh_keys} or C{hostname} it gets a cloud-init NoCloud
    seed, a CD-ROM read at its first boot.  Without C{cpu_model}: the
    template's (C{null}: none); without C{disk_mode}, the template's.
    """
    vm = await models.vms.create(
        cluster, body["template"], body.get("name"), body.get("memory"), body.get("cpus"),
        body.get("nics"), user_data=body.get("user_data"), ssh_keys=body.get("ssh_keys"),
        hostname=body.get("hostname"), cpu_model=body.get("cpu_model", NOT_GIVEN),
        disk_mode=body.get("disk_mode"),
    )
    return Response(representation(vm), 201, {"Location": href(vm)})


@routes.route("GET", "vm", answers={200: VM_SCHEMA})
async def get_vm(models, request, body, cluster, name):
    """Describe one VM, with its live state."""
    return representation(await models.vms.get(cluster, name))


@routes.route("PUT", "vm", obj(name=NAME, memory=MEMORY, cpus=CPUS,
                              cpu_model=nullable(CPU_MODEL)),
              answers={200: VM_SCHEMA}, errors=(409, 503))
async def update_vm(models, request, body, cluster, name):
    """Change a VM's stored definition (it takes effect at its next start)."""
    vm = await models.vms.update(
        cluster, name, body.get("name"), body.get("memory"), body.get("cpus"),
        body.get("cpu_model", NOT_GIVEN),
    )
    headers = {"Location": href(vm)} if vm.name != name else {}
    return Response(representation(vm), 200, headers)


@routes.route("DELETE", "vm", obj(force=BOOL, keep_storage=BOOL), answers={204: None},
              errors=(409, 502, 503))
async def delete_vm(models, request, body, cluster, name):
    """Delete a VM (and its own disks, unless keep_storage)."""
    await models.vms.delete(
        cluster, name, force=body.get("force", False), keep_storage=body.get("keep_storage", False)
    )
    return Response(code=204)


@routes.route("GET", "vm.screenshot", produces="image/png", role=OPERATOR, answers={200: None},
              errors=(409, 502, 503))
async def screenshot(models, request, body, cluster, name):
    """A PNG of the VM's screen (taken at most every few seconds)."""
    png = await models.vms.screenshot(cluster, name)
    return Response(raw=png, content_type="image/png", headers={"Cache-Control": "no-cache"})


def _quick_action(action: str):
    async def handler(models, request, body, cluster, name):
        return representation(await models.vms.act(cluster, name, action))

    handler.__doc__ = f"{action.capitalize()} the VM."
    return handler


async def _start(models, request, body, cluster, name):
    """
    Start the VM: the VM once it runs; a local-copy mode VM (C{disk_mode}
    C{local}) answers a task at once, whose progress is the copy of its
    disks to its host.
    """
    started = await models.vms.start(cluster, name)
    if isinstance(started, VM):
        return representation(started)
    return task_response(started)


async def _stop(models, request, body, cluster, name):
    """Shut the VM down, remove it from its host and release its placement (a task)."""
    task = await models.vms.stop(
        cluster,
        name,
        body.get("timeout"),
        body.get("force", False),
    )
    return task_response(task)


#: The body of C{migrate}: the host to move to (by default the placement rule picks one).
MIGRATE = obj(host=NAME)


async def _migrate(models, request, body, cluster, name):
    """
    Move the running or paused VM live to another host (a task whose
    progress follows the copy of its memory).
    """
    task = await models.vms.migrate(cluster, name, body.get("host"))
    return task_response(task)


for _action in VM_ACTIONS:
    if _action == "stop":
        routes.route("POST", "vm.stop", STOP, role=OPERATOR, answers={202: TASK},
                     errors=(409, 502, 503))(_stop)
    elif _action == "start":
        routes.route("POST", "vm.start", obj(), role=OPERATOR,
                     answers={200: VM_SCHEMA, 202: TASK}, errors=(409, 502, 503))(_start)
    elif _action == "migrate":
        routes.route("POST", "vm.migrate", MIGRATE, role=OPERATOR, answers={202: TASK},
                     errors=(400, 404, 409, 502, 503))(_migrate)
    else:
        routes.route("POST", f"vm.{_action}", obj(), role=OPERATOR, answers={200: VM_SCHEMA},
                     errors=(409, 502, 503))(_quick_action(_action))


# Cluster actions: start or stop every VM of the cluster, as a task.


def _cluster_action(action: str, schema):
    async def handler(models, request, body, name):
        await models.clusters.check_action(name, action)
        task = await models.vms.cluster_action(name, action, **body)
        return task_response(task)

    handler.__doc__ = f"{action.capitalize()} every VM of the cluster (a task)."
    routes.route("POST", f"cluster.{action}", schema, role=OPERATOR, answers={202: TASK},
                 errors=(409,))(handler)


_cluster_action("start", obj())
_cluster_action("stop", STOP)
