"""C{comet cluster}, C{comet vm}, C{comet template} and C{comet host}."""

from __future__ import annotations

import sys

import click

from comet_client import console, names
from comet_client.api import path
from comet_client.cli import EXIT_REFUSED, App, command_group, json_option, pass_app, wait_option


def body_of(**fields):
    """A request body of the options given (C{None}: not given)."""
    return {k: v for k, v in fields.items() if v is not None and v is not False}


_CPU_MODEL_HELP = "The CPU model its guest needs (e.g. Haswell-noTSX; 'none': none)."


def with_cpu_model(body: dict, cpu_model: str | None) -> dict:
    """C{body} with C{--cpu-model} (C{none}: JSON null) if it was given."""
    if cpu_model is not None:
        body["cpu_model"] = None if cpu_model == "none" else cpu_model
    return body


# --- clusters ------------------------------------------------------------------

cluster = command_group("cluster", "Clusters of VMs.")


@cluster.command("list")
@json_option
@pass_app
def cluster_list(app: App, as_json):
    """List the clusters."""
    app.show(app.client.get("/cluster"), as_json, ("name", "state", "vms"))


@cluster.command("show")
@click.argument("name", type=names.CLUSTER)
@json_option
@pass_app
def cluster_show(app: App, name, as_json):
    """Describe a cluster."""
    app.show(app.client.get(path("cluster", name)), as_json)


@cluster.command("create")
@click.argument("name")
@click.option("--description", help="What the cluster is for.")
@json_option
@pass_app
def cluster_create(app: App, name, description, as_json):
    """Create an empty cluster."""
    app.call("POST", "/cluster", body_of(name=name, description=description), as_json)


@cluster.command("update")
@click.argument("name", type=names.CLUSTER)
@click.option("--name", "new_name", help="A new name.")
@click.option("--description", help="A new description.")
@json_option
@pass_app
def cluster_update(app: App, name, new_name, description, as_json):
    """Rename a cluster or change its description."""
    app.call("PUT", path("cluster", name), body_of(name=new_name, description=description), as_json)


@cluster.command("delete")
@click.argument("name", type=names.CLUSTER)
@click.option("--force", is_flag=True, help="Power off and delete its VMs too.")
@pass_app
def cluster_delete(app: App, name, force):
    """Delete a cluster (one with VMs only with --force)."""
    app.call("DELETE", path("cluster", name), body_of(force=force), done=f"Deleted cluster {name}.")


@cluster.command("start")
@click.argument("name", type=names.CLUSTER)
@json_option
@wait_option
@pass_app
def cluster_start(app: App, name, as_json, no_wait):
    """Start every VM of the cluster (a task)."""
    app.call("POST", path("cluster", name, "start"), {}, as_json, no_wait)


@cluster.command("stop")
@click.argument("name", type=names.CLUSTER)
@click.option("--timeout", type=click.FloatRange(0, 3600), help="Seconds to wait for each guest to shut down.")
@click.option("--force", is_flag=True, help="Power off the guests that do not shut down in time.")
@json_option
@wait_option
@pass_app
def cluster_stop(app: App, name, timeout, force, as_json, no_wait):
    """Stop every VM of the cluster and bring their images back to storage (a task)."""
    app.call("POST", path("cluster", name, "stop"), body_of(timeout=timeout, force=force), as_json, no_wait)


# --- VMs -----------------------------------------------------------------------

vm = command_group("vm", "Virtual machines, named CLUSTER/VM.")


def vm_path(ref, *rest):
    cluster_name, name = ref
    return path("cluster", cluster_name, "vms", name, *rest)


@vm.command("list")
@click.argument("cluster_name", metavar="CLUSTER", type=names.CLUSTER)
@click.option("--watch", is_flag=True,
              help="Redraw the list whenever a VM of the cluster changes, until Ctrl-C.")
@json_option
@pass_app
def vm_list(app: App, cluster_name, watch, as_json):
    """List the VMs of a cluster."""
    uri = path("cluster", cluster_name, "vms")
    columns = ("name", "state", "host")
    if watch:
        app.watch(uri, columns, types=["vm"], resources=[path("cluster", cluster_name)],
                  as_json=as_json)
    else:
        app.show(app.client.get(uri), as_json, columns)


@vm.command("show")
@click.argument("ref", metavar="CLUSTER/VM", type=names.VM)
@json_option
@pass_app
def vm_show(app: App, ref, as_json):
    """Describe a VM."""
    app.show(app.client.get(vm_path(ref)), as_json)


def _nics(values, with_mac: bool):
    """C{--nic NETWORK[=MAC]} options as the API's C{nics} (C{None}: none given)."""
    if not values:
        return None
    nics = []
    for value in values:
        network, equals, mac = value.partition("=")
        if not network or (equals and (not with_mac or not mac)):
            raise click.BadParameter(f"{value!r} is not {'NETWORK[=MAC]' if with_mac else 'NETWORK'}",
                                     param_hint="--nic")
        nics.append({"network": network, **({"mac": mac} if mac else {})})
    return nics


def _ssh_keys(files):
    """The public keys in C{--ssh-key} files: each line that is not empty or a comment."""
    keys = []
    for f in files:
        keys += [line.strip() for line in f.read().splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]
    return keys or None


@vm.command("create")
@click.argument("ref", metavar="CLUSTER[/VM]", type=names.NEW_VM)
@click.option("--template", "-t", required=True, type=names.TEMPLATE, help="The template to copy.")
@click.option("--memory", type=int, help="MB (default: the template's).")
@click.option("--cpus", type=int, help="Virtual CPUs (default: the template's).")
@click.option("--nic", "nics", multiple=True, metavar="NETWORK[=MAC]",
              help="A NIC on NETWORK ('private': the cluster's own), in order; repeatable"
                   " (default: the template's NICs).")
@click.option("--hostname", help="The guest's host name (a first-boot seed; default: the VM's name).")
@click.option("--ssh-key", "ssh_keys", multiple=True, type=click.File("r"), metavar="FILE",
              help="A file of SSH public keys for the guest (a first-boot seed); repeatable.")
@click.option("--user-data", type=click.File("r"), metavar="FILE",
              help="cloud-init user-data for the first boot ('-': standard input).")
@click.option("--cpu-model", help=_CPU_MODEL_HELP + " Default: the template's.")
@json_option
@pass_app
def vm_create(app: App, ref, template, memory, cpus, nics, hostname, ssh_keys, user_data,
              cpu_model, as_json):
    """Create a VM from a template (without a name: the template's name and a number).

    With --hostname, --ssh-key or --user-data the VM gets a cloud-init
    NoCloud seed, a CD-ROM its guest reads at its first boot.
    """
    cluster_name, name = ref
    app.call("POST", path("cluster", cluster_name, "vms"),
             with_cpu_model(body_of(template=template, name=name, memory=memory, cpus=cpus,
                                    nics=_nics(nics, with_mac=True), hostname=hostname,
                                    ssh_keys=_ssh_keys(ssh_keys),
                                    user_data=None if user_data is None else user_data.read()),
                            cpu_model), as_json)


@vm.command("update")
@click.argument("ref", metavar="CLUSTER/VM", type=names.VM)
@click.option("--name", "new_name", help="A new name (only while shut off).")
@click.option("--memory", type=int, help="MB, from the next start.")
@click.option("--cpus", type=int, help="Virtual CPUs, from the next start.")
@click.option("--cpu-model", help=_CPU_MODEL_HELP + " From the next start.")
@json_option
@pass_app
def vm_update(app: App, ref, new_name, memory, cpus, cpu_model, as_json):
    """Rename a VM or change its memory, CPUs or CPU model."""
    app.call("PUT", vm_path(ref),
             with_cpu_model(body_of(name=new_name, memory=memory, cpus=cpus), cpu_model), as_json)


@vm.command("delete")
@click.argument("ref", metavar="CLUSTER/VM", type=names.VM)
@click.option("--force", is_flag=True, help="Power it off first if it runs.")
@click.option("--keep-storage", is_flag=True, help="Keep its disks.")
@pass_app
def vm_delete(app: App, ref, force, keep_storage):
    """Delete a VM and (unless --keep-storage) its disks."""
    app.call("DELETE", vm_path(ref), body_of(force=force, keep_storage=keep_storage),
             done=f"Deleted VM {ref[0]}/{ref[1]}.")


def _vm_action(action: str, doc: str):
    @vm.command(action, help=doc)
    @click.argument("ref", metavar="CLUSTER/VM", type=names.VM)
    @json_option
    @pass_app
    def command(app: App, ref, as_json):
        app.call("POST", vm_path(ref, action), {}, as_json)

    return command


for _action, _doc in (
    ("start", "Start a VM (placing it on a host)."),
    ("poweroff", "Power a VM off at once (forced)."),
    ("shutdown", "Ask the guest to shut down (ACPI; it may ignore it)."),
    ("reset", "Reset a VM (a hard reboot)."),
    ("suspend", "Pause a running VM."),
    ("resume", "Resume a paused VM."),
):
    _vm_action(_action, _doc)


@vm.command("stop")
@click.argument("ref", metavar="CLUSTER/VM", type=names.VM)
@click.option("--timeout", type=click.FloatRange(0, 3600), help="Seconds to wait for the guest to shut down.")
@click.option("--force", is_flag=True, help="Power it off if it does not shut down in time.")
@json_option
@wait_option
@pass_app
def vm_stop(app: App, ref, timeout, force, as_json, no_wait):
    """Shut a VM down, bring its image back to storage and free its host (a task)."""
    app.call("POST", vm_path(ref, "stop"), body_of(timeout=timeout, force=force), as_json, no_wait)


@vm.command("migrate")
@click.argument("ref", metavar="CLUSTER/VM", type=names.VM)
@click.option("--host", type=names.HOST, help="The host to move to (default: the placement rule's choice).")
@json_option
@wait_option
@pass_app
def vm_migrate(app: App, ref, host, as_json, no_wait):
    """Move a running or paused VM live to another host (a task)."""
    app.call("POST", vm_path(ref, "migrate"), body_of(host=host), as_json, no_wait)


@vm.command("screenshot")
@click.argument("ref", metavar="CLUSTER/VM", type=names.VM)
@click.option("-o", "--output", "target", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="The PNG file to write ('-': standard output).")
@pass_app
def vm_screenshot(app: App, ref, target):
    """Save a PNG of the VM's screen."""
    response = app.client.request("GET", vm_path(ref, "screenshot"), accept="image/png")
    if target == "-":
        sys.stdout.buffer.write(response.content)
        sys.stdout.flush()
    else:
        with open(target, "wb") as f:
            f.write(response.content)
        app.err.print(f"Saved {len(response.content)} bytes to {target}.")


@vm.command("console")
@click.argument("ref", metavar="CLUSTER/VM", type=names.VM)
@click.option("--serial", is_flag=True, help=f"Attach this terminal to the serial console ({console.ESCAPE_NAME} leaves).")
@click.option("--open", "open_browser", is_flag=True, help="Open the VNC console page in the browser.")
@pass_app
def vm_console(app: App, ref, serial, open_browser):
    """Print the URL of the VM's VNC console page (single use), open it, or attach the serial console."""
    if serial:
        location = app.client.redirect(vm_path(ref, "console"), type="serial")
        why, failed = console.attach(console.websocket_url(app.client.base, location))
        app.err.print(f"\nSerial console closed ({why}).")
        if failed:
            sys.exit(EXIT_REFUSED)
        return
    url = app.client.url(app.client.redirect(vm_path(ref, "console")))
    if open_browser:
        click.launch(url)
    click.echo(url)


@vm.command("storages")
@click.argument("ref", metavar="CLUSTER/VM", type=names.VM)
@json_option
@pass_app
def vm_storages(app: App, ref, as_json):
    """List the volumes attached to a VM."""
    app.show(app.client.get(vm_path(ref, "storages")), as_json, ("name", "dev", "pool", "state", "target"))


# A VM's NICs: comet vm nic list|add|rm CLUSTER/VM ...

@vm.group("nic")
def nic():
    """A VM's NICs: listed, added (hot-plugged if it runs), removed."""

#: The columns of a NIC listing: the VM's representation's view of each.
NIC_COLUMNS = ("device", "network", "mac", "bridge")


@nic.command("list")
@click.argument("ref", metavar="CLUSTER/VM", type=names.VM)
@json_option
@pass_app
def nic_list(app: App, ref, as_json):
    """List a VM's NICs, in the order its guest numbers them."""
    app.show(app.client.get(vm_path(ref, "nics")), as_json, NIC_COLUMNS)


@nic.command("add")
@click.argument("ref", metavar="CLUSTER/VM", type=names.VM)
@click.option("--network", required=True, help="The network ('private': the cluster's own).")
@click.option("--mac", help="Its MAC (default: derived from the VM's uuid and the NIC's place).")
@json_option
@pass_app
def nic_add(app: App, ref, network, mac, as_json):
    """Add a NIC to a VM, last in its order: hot-plugged if the VM is on a host."""
    app.call("POST", vm_path(ref, "nics"), body_of(network=network, mac=mac), as_json)


@nic.command("rm")
@click.argument("ref", metavar="CLUSTER/VM", type=names.VM)
@click.argument("mac")
@json_option
@wait_option
@pass_app
def nic_rm(app: App, ref, mac, as_json, no_wait):
    """Take NIC MAC off a VM (a task: a running guest must let it go)."""
    app.call("DELETE", vm_path(ref, "nics", mac), {}, as_json, no_wait)


# --- templates -----------------------------------------------------------------

template = command_group("template", "Templates VMs are made from.")


def _disk(value):
    if value is None:
        return None
    if value == "none":
        return "none"
    pool, _, volume = value.partition("/")
    if not pool or not volume:
        raise click.BadParameter(f"{value!r} is not POOL/VOLUME (or 'none')")
    return {"pool": pool, "volume": volume}


@template.command("list")
@json_option
@pass_app
def template_list(app: App, as_json):
    """List the templates."""
    items = app.client.get("/templates")
    if not as_json:
        # The listing has names only; a table shows each template's sizes.
        items = [app.client.get(t["href"]) for t in items]
    app.show(items, as_json, ("name", "memory", "cpus", "disk"))


@template.command("show")
@click.argument("name", type=names.TEMPLATE)
@json_option
@pass_app
def template_show(app: App, name, as_json):
    """Describe a template."""
    app.show(app.client.get(path("templates", name)), as_json)


_DISK_HELP = "The base image, POOL/VOLUME ('none': no disk)."


_NIC_HELP = ("A NIC of its VMs on NETWORK ('private': the VM's cluster's own), in order;"
             " repeatable.")


@template.command("create")
@click.argument("name")
@click.option("--memory", type=int, help="MB.")
@click.option("--cpus", type=int, help="Virtual CPUs.")
@click.option("--disk", help=_DISK_HELP)
@click.option("--nic", "nics", multiple=True, metavar="NETWORK", help=_NIC_HELP)
@click.option("--cpu-model", help=_CPU_MODEL_HELP)
@json_option
@pass_app
def template_create(app: App, name, memory, cpus, disk, nics, cpu_model, as_json):
    """Create a template."""
    disk = _disk(disk)
    body = with_cpu_model(body_of(name=name, memory=memory, cpus=cpus, disk=disk,
                                  nics=_nics(nics, with_mac=False)), cpu_model)
    if disk == "none":
        body["disk"] = None
    app.call("POST", "/templates", body, as_json)


@template.command("update")
@click.argument("name", type=names.TEMPLATE)
@click.option("--name", "new_name", help="A new name.")
@click.option("--memory", type=int, help="MB.")
@click.option("--cpus", type=int, help="Virtual CPUs.")
@click.option("--disk", help=_DISK_HELP)
@click.option("--nic", "nics", multiple=True, metavar="NETWORK",
              help="Its NICs from now on (replacing the old list), in order; repeatable.")
@click.option("--cpu-model", help=_CPU_MODEL_HELP)
@json_option
@pass_app
def template_update(app: App, name, new_name, memory, cpus, disk, nics, cpu_model, as_json):
    """Change a template."""
    disk = _disk(disk)
    body = with_cpu_model(body_of(name=new_name, memory=memory, cpus=cpus, disk=disk,
                                  nics=_nics(nics, with_mac=False)), cpu_model)
    if disk == "none":
        body["disk"] = None
    app.call("PUT", path("templates", name), body, as_json)


@template.command("delete")
@click.argument("name", type=names.TEMPLATE)
@pass_app
def template_delete(app: App, name):
    """Delete a template no VM uses."""
    app.call("DELETE", path("templates", name), {}, done=f"Deleted template {name}.")


# --- hosts ---------------------------------------------------------------------

host = command_group("host", "Compute hosts (from the daemon's configuration).")


@host.command("list")
@json_option
@pass_app
def host_list(app: App, as_json):
    """List the compute hosts with their live state."""
    app.show(app.client.get("/hosts"), as_json, ("name", "state", "cpus", "memory", "memory_free", "vms"))


@host.command("show")
@click.argument("name", type=names.HOST)
@json_option
@pass_app
def host_show(app: App, name, as_json):
    """Describe a compute host."""
    app.show(app.client.get(path("hosts", name)), as_json)


@host.command("maintenance")
@click.argument("name", type=names.HOST)
@click.argument("switch", type=click.Choice(["on", "off"]))
@json_option
@pass_app
def host_maintenance(app: App, name, switch, as_json):
    """Put a host in maintenance (no VM is placed on it) or take it out (admins)."""
    app.call("POST", path("hosts", name, "maintenance"), {"enabled": switch == "on"}, as_json)


@host.command("evacuate")
@click.argument("name", type=names.HOST)
@click.option("--fenced", is_flag=True,
              help="The host is dead for good: withdraw its exports and start its VMs elsewhere.")
@json_option
@wait_option
@pass_app
def host_evacuate(app: App, name, fenced, as_json, no_wait):
    """Move every VM off a host in maintenance (a task; admins)."""
    app.call("POST", path("hosts", name, "evacuate"), body_of(fenced=fenced), as_json, no_wait)
