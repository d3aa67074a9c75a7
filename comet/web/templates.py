"""The template collection and resource: C{/templates}, C{/templates/:name}."""

from __future__ import annotations

from comet.model.disk_modes import DISK_MODES
from comet.model.vms import MIN_MEMORY
from comet.store import TemplateRecord
from comet.web._schemas import NAME, TIME, URI, listing, nullable, obj, resource
from comet.web._table import Response, Routes
from comet.web.paths import PATHS

#: The endpoints this module declares (each app serves them: L{comet.web.routes}).
routes = Routes()


#: MB; the models' least (L{comet.model.vms.MIN_MEMORY}) to 16 TiB.
MEMORY = {"type": "integer", "minimum": MIN_MEMORY, "maximum": 16 * 1024 * 1024}
#: At most the CPUs of the largest host: the served document says how many
#: (L{comet.web.openapi.document}); the models refuse more.
CPUS = {"type": "integer", "minimum": 1, "maximum": 4096}
DISK = obj(("pool", "volume"), pool=NAME, volume=NAME)
#: A template's NICs: the network of each (C{private}: the cluster's own;
#: others: a bridge hosts offer, C{[[hosts]] bridges}).
TEMPLATE_NICS = {"type": "array", "maxItems": 8, "items": obj(("network",), network=NAME)}
#: The CPU model a VM needs (L{comet.model.cpus}): a name like C{Haswell-noTSX}
#: (the models refuse the host modes C{host-model} and C{host-passthrough}).
CPU_MODEL = NAME
#: Where VMs run their disks: on the storage server (iSCSI) or on a copy on
#: their compute host's ZFS (local-copy mode).
DISK_MODE = {"enum": list(DISK_MODES)}

SUMMARY = resource("TemplateSummary", name=NAME, href=URI)
TEMPLATE = resource(
    "Template",
    name=NAME,
    memory=MEMORY,
    cpus=CPUS,
    disk=nullable(DISK),
    nics=TEMPLATE_NICS,
    cpu_model=nullable(CPU_MODEL),
    disk_mode=DISK_MODE,
    created=TIME,
    href=URI,
)


def representation(t: TemplateRecord) -> dict:
    disk = {"pool": t.disk_pool, "volume": t.disk_volume} if t.disk_pool else None
    return {
        "name": t.name,
        "memory": t.memory,
        "cpus": t.cpus,
        "disk": disk,
        "nics": [{"network": network} for network in t.nics],
        "cpu_model": t.cpu_model,
        "disk_mode": t.disk_mode,
        "created": t.created,
        "href": PATHS.href("template", name=t.name),
    }


@routes.route("GET", "templates", answers={200: listing(SUMMARY)})
async def list_templates(models, request, body):
    """List the templates."""
    return [
        {"name": t.name, "href": PATHS.href("template", name=t.name)}
        for t in await models.templates.list()
    ]


@routes.route(
    "POST",
    "templates",
    obj(("name",), name=NAME, memory=MEMORY, cpus=CPUS, disk={"oneOf": [DISK, {"type": "null"}]},
        nics=TEMPLATE_NICS, cpu_model=nullable(CPU_MODEL), disk_mode=DISK_MODE),
    answers={201: TEMPLATE},
    errors=(404, 409, 502, 503),
)
async def create_template(models, request, body):
    """
    Create a template (memory in MB, default 512; cpus default 1; disk, NICs
    and the CPU model its VMs need optional; C{disk_mode} C{iscsi} by default).
    """
    template = await models.templates.create(
        body["name"], body.get("memory", 512), body.get("cpus", 1), body.get("disk"),
        body.get("nics", []), body.get("cpu_model"), body.get("disk_mode", "iscsi")
    )
    href = PATHS.href("template", name=template.name)
    return Response(representation(template), 201, {"Location": href})


@routes.route("GET", "template", answers={200: TEMPLATE})
async def get_template(models, request, body, name):
    """Describe one template."""
    return representation(await models.templates.get(name))


@routes.route(
    "PUT",
    "template",
    obj(name=NAME, memory=MEMORY, cpus=CPUS, disk={"oneOf": [DISK, {"type": "null"}]},
        nics=TEMPLATE_NICS, cpu_model=nullable(CPU_MODEL), disk_mode=DISK_MODE),
    answers={200: TEMPLATE},
    errors=(409, 502, 503),
)
async def update_template(models, request, body, name):
    """Change a template (VMs made from it keep what they were given)."""
    template = await models.templates.update(name, body)
    headers = {}
    if template.name != name:
        headers["Location"] = PATHS.href("template", name=template.name)
    return Response(representation(template), 200, headers)


@routes.route("DELETE", "template", obj(), answers={204: None}, errors=(409,))
async def delete_template(models, request, body, name):
    """Delete a template no VM was made from."""
    await models.templates.delete(name)
    return Response(code=204)
