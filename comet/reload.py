"""
L{Reloader}: a running daemon rereads its configuration file (C{SIGHUP},
systemd's C{ExecReload}) and applies what can change without a restart, so
that adding or removing a compute host or a storage server does not kill the
tasks that run.

What is applied live:
  - C{[[hosts]]} added (connected at once) or removed (its connection
    closed); not one with a C{tunnel_address} (every host's tunnels list
    their peers: that needs a restart).  A host that still has VMs placed on it (any VM record naming
    it) is I{not} removed: the reload says so and keeps it, since its VMs
    would be left on a host Comet no longer sees.  A host whose settings
    changed (its URI, say) keeps its running settings: remove it, reload,
    add it back.  Only its C{cpu_mode} applies at once: to the VMs placed
    and started from then on (running ones keep their CPU until their next
    start).
  - C{[[storageservers]]} added (an ssh runner made, watched like the
    others) or removed (its runner stopped).  A server that any storage
    pool is on (configured, or created through the API) is not removed.
  - C{[reconcile] interval}, C{[storage] watch_interval} and C{[tasks]}:
    their timers start again with the new values.

Anything else that changed (the listen address, the database, the manhole,
C{[[storagepools]]}, the other keys) is refused with one log line each and
the running value kept: a restart applies it.  A file that cannot be read
or parsed changes nothing.  Reloads run one at a time.
"""

from __future__ import annotations

from typing import Any, Callable

import attrs
from twisted.internet.defer import DeferredLock
from twisted.logger import Logger

from comet import config as _config

log = Logger()

#: Sections compared whole: a change in one needs a restart.
_RESTART_SECTIONS = ("api", "database", "manhole", "compute", "console", "metrics", "log", "debug",
                     "storagepools", "network")


@attrs.frozen
class Outcome:
    """What one reload did: names added and removed, and the refusals (one line each)."""

    hosts_added: tuple[str, ...] = ()
    hosts_removed: tuple[str, ...] = ()
    servers_added: tuple[str, ...] = ()
    servers_removed: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()
    applied: tuple[str, ...] = ()


class Reloader:
    """
    Rereads the file the running configuration came from and applies it.

    @param config: the running L{comet.config.Config} (as the daemon
        resolved it).
    @param models: the daemon's L{comet.model.Models}.
    @param hypervisors: the L{comet.virt.Hypervisors} (hosts added, removed).
    @param make_runner: C{make_runner(server_config, storage_config)}: the
        runner of a storage server a reload adds.
    @param prepare: what the daemon does to a freshly read configuration
        before it is used (resolves the ssh control directory); may raise
        L{comet.config.ConfigError}.
    @param load: reads a configuration file (L{comet.config.load}).
    """

    def __init__(self, config: _config.Config, models, hypervisors,
                 make_runner: Callable[[Any, Any], Any],
                 prepare: Callable[[_config.Config], _config.Config] = lambda c: c,
                 load: Callable[[str], _config.Config] = _config.load):
        self.config = config
        self._models = models
        self._hv = hypervisors
        self._make_runner = make_runner
        self._prepare = prepare
        self._load = load
        self._lock = DeferredLock()

    async def reload(self) -> Outcome | None:
        """
        Reread and apply; C{None} when nothing could be read (logged).
        Never raises: a reload that fails midway logs why.
        """
        await self._lock.acquire()
        try:
            return await self._reload()
        except Exception:
            log.failure("reloading the configuration failed")
            return None
        finally:
            self._lock.release()

    async def _reload(self) -> Outcome | None:
        source = self.config.source
        if source is None:
            log.warn("reload: the daemon runs on the embedded default configuration"
                     " (no --config file): nothing to reread")
            return None
        try:
            new = self._prepare(self._load(source))
        except _config.ConfigError as e:
            log.error("reload refused, nothing changed: {error}", error=str(e))
            return None
        old = self.config
        refused: list[str] = []
        applied: list[str] = []
        storage = old.storage
        if not storage.control_dir:
            # Resolved only once there are storage servers: the first one
            # a reload adds resolves it.
            storage = attrs.evolve(storage, control_dir=new.storage.control_dir)
        for section in _RESTART_SECTIONS:
            if getattr(new, section) != getattr(old, section):
                refused.append(f"[{section}] changed: it needs a restart; the running"
                               " values are kept")
        live_storage = ("watch_interval",)
        # An unresolved (default) control_dir in a file without storage
        # servers is the one already in use.
        wanted_dir = new.storage.control_dir or storage.control_dir
        if (attrs.evolve(new.storage, watch_interval=0.0, control_dir=wanted_dir)
                != attrs.evolve(storage, watch_interval=0.0)):
            refused.append("[storage] changed (besides watch_interval): it needs a"
                           " restart; the running values are kept")
        hosts, hosts_added, hosts_removed = await self._hosts(old, new, refused, applied)
        servers, servers_added, servers_removed = await self._servers(
            old, new, storage, refused)
        storage = attrs.evolve(storage, **{k: getattr(new.storage, k) for k in live_storage})
        self.config = attrs.evolve(
            old, hosts=hosts, storageservers=servers, storage=storage,
            reconcile=new.reconcile, tasks=new.tasks)
        self._timers(old, self.config, applied)
        outcome = Outcome(hosts_added, hosts_removed, servers_added, servers_removed,
                          tuple(refused), tuple(applied))
        for line in refused:
            log.warn("reload: {refusal}", refusal=line)
        log.info(
            "configuration reloaded from {source}: hosts added {hosts_added},"
            " removed {hosts_removed}; storage servers added {servers_added},"
            " removed {servers_removed}; {changed}; {refusals} refused",
            source=source, hosts_added=list(hosts_added), hosts_removed=list(hosts_removed),
            servers_added=list(servers_added), servers_removed=list(servers_removed),
            changed=", ".join(applied) or "no timer changed", refusals=len(refused))
        return outcome

    async def _hosts(self, old, new, refused: list[str], applied: list[str]):
        """Apply the compute hosts' changes; the hosts now configured, added, removed."""
        gone = {h.name for h in old.hosts} - {h.name for h in new.hosts}
        placed = await self._models.context.vms.committed() if gone else {}

        async def add(host):
            self._hv.add_host(host)

        def not_added(host):
            # Every host's tunnels list its peers: one more needs a restart.
            return ("it carries private networks (tunnel_address), which needs a restart"
                    if host.tunnel_address else None)

        def not_removed(name):
            return ("VMs are placed on it (stop and delete or migrate them first)"
                    if name in placed else None)

        kept, added, removed = await _apply(
            "compute host", lambda h: h.name, old.hosts, new.hosts, refused,
            add, self._hv.remove_host, not_added, not_removed, live=("cpu_mode",),
            applied=applied)
        self._models.hosts.set_hosts(kept)
        self._models.console.set_hosts(kept)
        self._models.storage.initiators.set_hosts(kept)
        return kept, added, removed

    async def _servers(self, old, new, storage, refused: list[str]):
        """Apply the storage servers' changes; the servers now configured, added, removed."""
        gone = {s.host for s in old.storageservers} - {s.host for s in new.storageservers}
        in_use = {p.server for p in await self._models.storage.pools()} if gone else set()
        models = self._models

        async def add(server):
            runner = self._make_runner(server, storage)
            models.storage.server_set.add(server.host, runner)
            models.serverwatch.add(server.host, runner)

        async def remove(host):
            models.serverwatch.remove(host)
            await models.storage.server_set.remove(host)

        def not_removed(host):
            return ("a storage pool is on it (delete the pool first)"
                    if host in in_use else None)

        return await _apply("storage server", lambda s: s.host, old.storageservers,
                            new.storageservers, refused, add, remove, lambda _: None,
                            not_removed)

    def _timers(self, old, new, applied: list[str]) -> None:
        """Start again the timers whose interval changed."""
        models = self._models
        if new.reconcile != old.reconcile:
            models.reconciler.stop()
            models.reconciler.start(new.reconcile.interval)
            applied.append(f"reconcile.interval = {new.reconcile.interval:g}")
        if new.tasks != old.tasks:
            models.tasks.stop_pruning()
            models.tasks.start_pruning(new.tasks.keep_days, new.tasks.prune_interval)
            applied.append("[tasks] applied")
        if new.storage.watch_interval != old.storage.watch_interval:
            models.serverwatch.stop()
            models.serverwatch.start(new.storage.watch_interval)
            applied.append(f"storage.watch_interval = {new.storage.watch_interval:g}")


async def _apply(what: str, key, running, wanted, refused: list[str], add, remove,
                 not_added, not_removed, live: tuple[str, ...] = (),
                 applied: list[str] | None = None):
    """
    The one walk a reload takes over compute hosts and over storage servers
    (C{what}, named by C{key}): a new one is added (C{await add(item)})
    unless C{not_added(item)} says why not; one whose settings changed is
    kept as it runs, refused, unless only its C{live} settings changed (then
    the new ones are kept, and said in C{applied}); one no longer wanted is
    removed (C{await remove(name)}) unless C{not_removed(name)} says why not.
    Answers the ones now configured, and the names added and removed;
    refusals are appended to C{refused}.
    """
    have = {key(item): item for item in running}
    want = {key(item) for item in wanted}
    kept, added, removed = [], [], []
    for item in wanted:
        name, current = key(item), have.get(key(item))
        if current is None:
            why = not_added(item)
            if why:
                refused.append(f"{what} {name!r} not added: {why}")
                continue
            await add(item)
            added.append(name)
            kept.append(item)
            log.info("reload: {what} {name} added", what=what, name=name)
        else:
            if current != item and attrs.evolve(
                    current, **{k: getattr(item, k) for k in live}) == item:
                changes = [f"{k} = {getattr(item, k)!r}" for k in live
                           if getattr(item, k) != getattr(current, k)]
                applied.append(f"{what} {name!r}: {', '.join(changes)}")
                log.info("reload: {what} {name}: {changes}", what=what, name=name,
                         changes=", ".join(changes))
                current = item
            elif current != item:
                refused.append(f"{what} {name!r}: its settings changed; they need it removed"
                               " and added back (two reloads); the running ones are kept")
            kept.append(current)
    for name, item in have.items():
        if name in want:
            continue
        why = not_removed(name)
        if why:
            refused.append(f"{what} {name!r} not removed: {why}")
            kept.append(item)
            continue
        await remove(name)
        removed.append(name)
        log.info("reload: {what} {name} removed", what=what, name=name)
    return tuple(kept), tuple(added), tuple(removed)
