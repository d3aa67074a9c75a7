"""
The names commands take (C{CLUSTER}, C{CLUSTER/VM}, C{POOL/VOLUME}, ...) as
click parameter types, each completing from the API: the shell asks
C{comet} (C{_COMET_COMPLETE=...}), which asks the daemon of the login.
Completion never fails loudly: without a login or a daemon it offers nothing.
"""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem

from comet_client.api import ApiError, Unreachable, path

#: Clusters whose VMs are listed when completing C{CLUSTER/VM} without a C{/} yet.
MAX_CLUSTERS = 20


def _names(uri: str, key: str = "name") -> list[str]:
    from comet_client.cli import make_client

    try:
        client = make_client()
        try:
            return [item[key] for item in client.get(uri)]
        finally:
            client.close()
    except (ApiError, Unreachable, click.UsageError, KeyError, TypeError, ValueError):
        return []


class _Completing(click.ParamType):
    uri = ""

    def candidates(self, incomplete: str) -> list[str]:
        return _names(self.uri)

    def shell_complete(self, ctx, param, incomplete):
        return [CompletionItem(n) for n in self.candidates(incomplete) if n.startswith(incomplete)]


class Simple(_Completing):
    name = "name"

    def __init__(self, uri: str, metavar: str):
        self.uri = uri
        self.metavar = metavar

    def get_metavar(self, param, ctx=None):
        return self.metavar


class Pair(_Completing):
    """C{PARENT/NAME}: converted to a C{(parent, name)} tuple."""

    def __init__(self, metavar: str, parents: str, children, optional_name: bool = False):
        self.metavar = metavar
        self.parents = parents           # the URI listing the parents
        self.children = children         # parent -> the URI listing its children
        self.optional_name = optional_name
        self.name = metavar.lower()

    def get_metavar(self, param, ctx=None):
        return self.metavar

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parent, slash, name = value.partition("/")
        if not parent or (not self.optional_name and (not slash or not name)) or "/" in name:
            self.fail(f"{value!r} is not {self.metavar}", param, ctx)
        return parent, name or None

    def candidates(self, incomplete: str) -> list[str]:
        if "/" in incomplete:
            parents = [incomplete.partition("/")[0]]
        else:
            parents = [p for p in _names(self.parents) if p.startswith(incomplete)][:MAX_CLUSTERS]
        return [f"{p}/{n}" for p in parents for n in _names(self.children(p))]


CLUSTER = Simple("/cluster", "CLUSTER")
TEMPLATE = Simple("/templates", "TEMPLATE")
POOL = Simple("/storagepools", "POOL")
HOST = Simple("/hosts", "HOST")
SERVER = Simple("/storageservers", "SERVER")
VM = Pair("CLUSTER/VM", "/cluster", lambda c: path("cluster", c, "vms"))
NEW_VM = Pair("CLUSTER[/VM]", "/cluster", lambda c: path("cluster", c, "vms"), optional_name=True)
VOLUME = Pair("POOL/VOLUME", "/storagepools", lambda p: path("storagepools", p, "storagevolumes"))


class TaskId(_Completing):
    name = "task"

    def convert(self, value, param, ctx):
        try:
            return int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a task id", param, ctx)

    def get_metavar(self, param, ctx=None):
        return "TASK"

    def candidates(self, incomplete):
        return [str(i) for i in _names("/tasks?status=running", "id")]


TASK = TaskId()
